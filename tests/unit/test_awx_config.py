"""examples/awx: the controller configuration (infra.aap_configuration's data format) is one AWX would accept,
its surveys pass AWX's survey rules (tests/harness/awx_survey.py), every survey variable is one its playbook
reads, the survey defaults and bounds pass deploy_xdp.yml's own checks, and the workflow is the canary rollout
docs/awx.md describes."""

import configparser
import glob
import os
import re

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from ansible.utils.helpers import pct_to_int
from harness import awx_job, awx_survey, paths

# answers a person must type (required questions without a default)
TYPED_ANSWERS = {"ebpf_fleet_remove_hosts": "edges"}


CONFIG = awx_job.load_config()
TEMPLATES = {t["name"]: t for t in CONFIG["controller_templates"]}
WORKFLOWS = {w["name"]: w for w in CONFIG["controller_workflows"]}


def surveys():
    for item in CONFIG["controller_templates"] + CONFIG["controller_workflows"]:
        yield item["name"], item


def read_without_comments(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return "\n".join(line for line in handle.read().splitlines() if not line.lstrip().startswith("#"))


def inventory_groups() -> set:
    parser = configparser.ConfigParser(allow_no_value=True, delimiters=(" ",), strict=False)
    parser.read(os.path.join(paths.REPO, "examples", "inventory", "hosts.ini"))
    return {section.split(":")[0] for section in parser.sections()}


def test_the_configuration_has_every_object_type_docs_awx_md_names():
    assert set(CONFIG) == {
        "controller_projects",
        "controller_inventories",
        "controller_inventory_sources",
        "controller_credentials",
        "controller_execution_environments",
        "controller_templates",
        "controller_workflows",
    }
    assert set(TEMPLATES) == {"ebpf.fleet deploy", "ebpf.fleet status", "ebpf.fleet rollback", "ebpf.fleet remove"}


@pytest.mark.parametrize("name", sorted(dict(surveys())))
def test_every_survey_passes_awx_rules_and_its_defaults_launch(name):
    item = dict(surveys())[name]
    assert item["survey_enabled"] is True
    awx_survey.validate_spec(item["survey_spec"])
    spec = item["survey_spec"]
    typed = {q["variable"]: TYPED_ANSWERS[q["variable"]] for q in spec["spec"] if q["required"] and "default" not in q}
    extra = awx_survey.extra_vars(spec, typed)
    assert set(extra) >= {q["variable"] for q in spec["spec"] if q["required"]}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_each_job_template_runs_a_playbook_that_reads_every_survey_variable(name):
    template = TEMPLATES[name]
    playbook = os.path.join(paths.REPO, template["playbook"])
    assert os.path.isfile(playbook), template["playbook"]
    text = read_without_comments(playbook)
    unread = [q["variable"] for q in template["survey_spec"]["spec"] if not re.search(r"\b%s\b" % re.escape(q["variable"]), text)]
    assert unread == [], "%s: %s reads none of %s outside its comments" % (name, template["playbook"], unread)


def test_job_templates_point_at_objects_the_configuration_defines():
    projects = {p["name"] for p in CONFIG["controller_projects"]}
    inventories = {i["name"] for i in CONFIG["controller_inventories"]}
    environments = {e["name"] for e in CONFIG["controller_execution_environments"]}
    credentials = {c["name"] for c in CONFIG["controller_credentials"]}
    for template in TEMPLATES.values():
        assert template["project"] in projects and template["inventory"] in inventories, template["name"]
        assert template["execution_environment"] in environments, template["name"]
        assert set(template["credentials"]) <= credentials, template["name"]
        assert template.get("become_enabled", False) is False, "the playbooks become root themselves"
    for source in CONFIG["controller_inventory_sources"]:
        assert source["source_project"] in projects and source["inventory"] in inventories
        assert os.path.isfile(os.path.join(paths.REPO, source["source_path"])), source["source_path"]
    # changes are never run twice at once; a dry run is the job type prompt
    for name in ("ebpf.fleet deploy", "ebpf.fleet rollback", "ebpf.fleet remove"):
        assert TEMPLATES[name]["allow_simultaneous"] is False and TEMPLATES[name]["ask_job_type_on_launch"] is True


def deploy_plan_checks():
    """The plan play's first task of deploy_xdp.yml: its assert conditions and the task's vars."""
    with open(os.path.join(paths.REPO, "playbooks", "deploy_xdp.yml"), encoding="utf-8") as handle:
        plays = yaml.safe_load(handle)
    task = plays[0]["tasks"][0]
    assert "ansible.builtin.assert" in task, task["name"]
    return task["ansible.builtin.assert"]["that"], task.get("vars", {})


def failing_plan_checks(extra: dict) -> list:
    """The conditions of deploy_xdp.yml's plan play that fail for a host that sees these extra vars."""
    that, task_vars = deploy_plan_checks()
    variables = dict(extra, hostvars={"host1": dict(extra)}, ansible_play_hosts_all=["host1"], inventory_hostname="host1")
    variables.update({key: trust_as_template(value) for key, value in task_vars.items()})
    templar = Templar(loader=DataLoader(), variables=variables)
    return [cond for cond in that if not templar.evaluate_conditional(trust_as_template(cond))]


def deploy_answer_sets(item):
    """The survey's defaults, then each number question at its min and at its max."""
    spec = item["survey_spec"]
    yield "defaults", awx_survey.extra_vars(spec, {})
    for question in spec["spec"]:
        if question["type"] == "integer":
            for bound in ("min", "max"):
                yield "%s=%s" % (question["variable"], bound), awx_survey.extra_vars(spec, {question["variable"]: question[bound]})


@pytest.mark.parametrize("name", ["ebpf.fleet deploy", "ebpf.fleet canary rollout"])
def test_deploy_survey_defaults_and_bounds_pass_the_playbooks_own_checks(name):
    item = TEMPLATES.get(name) or WORKFLOWS[name]
    for label, extra in deploy_answer_sets(item):
        assert failing_plan_checks(extra) == [], "%s, %s: %s" % (name, label, extra)
    # the check bites: a list typed into the wave size, or a zero confirm window, is refused before any host changes
    assert failing_plan_checks({"deploy_xdp_serial": "[1, '25%']"}) == [
        "(deploy_xdp_serial_items | map('string') | map('trim') | reject('match', '^[0-9]+%?$') | list) == []"
    ]
    assert failing_plan_checks({"deploy_xdp_confirm_timeout": 0}) == ["deploy_xdp_confirm_timeout | default(60) | string is match('^[1-9][0-9]{0,4}$')"]
    assert failing_plan_checks({"deploy_xdp_fast_rerun": "sometimes"}) == [
        "deploy_xdp_fast_rerun | default(true) | string | lower in ['true', 'false', 'yes', 'no']"
    ]


@pytest.mark.parametrize("variable,template", [("deploy_xdp_serial", "ebpf.fleet deploy"), ("rollback_serial", "ebpf.fleet rollback")])
def test_batch_size_defaults_are_what_ansible_serial_takes(variable, template):
    question = [q for q in TEMPLATES[template]["survey_spec"]["spec"] if q["variable"] == variable][0]
    assert pct_to_int(question["default"], 40) == 0
    assert pct_to_int("25%", 40) == 10


def test_status_choices_are_booleans_to_ansible():
    for question in TEMPLATES["ebpf.fleet status"]["survey_spec"]["spec"]:
        if question["type"] == "multiplechoice":
            assert awx_survey.choice_list(question["choices"]) == ["false", "true"], question["variable"]


def test_rollback_deployment_choices_are_the_roles_deployment_names():
    names = set()
    for path in glob.glob(os.path.join(paths.REPO, "roles", "*", "defaults", "main.yml")):
        with open(path, encoding="utf-8") as handle:
            defaults = yaml.safe_load(handle) or {}
        names |= {value for key, value in defaults.items() if re.match(r"^[a-z_]+_name$", key) and isinstance(value, str)}
    question = [q for q in TEMPLATES["ebpf.fleet rollback"]["survey_spec"]["spec"] if q["variable"] == "rollback_names"][0]
    assert set(awx_survey.choice_list(question["choices"])) == names
    assert "default" not in question, "an unanswered multiselect must leave rollback_names unset (every deployment)"


WORKFLOW = WORKFLOWS["ebpf.fleet canary rollout"]
NODES = {n["identifier"]: n for n in WORKFLOW["workflow_nodes"]}


def edges(node_id: str, kind: str) -> list:
    return [e["identifier"] for e in NODES[node_id].get("related", {}).get(kind + "_nodes", [])]


def test_workflow_nodes_run_defined_templates_and_link_to_existing_nodes():
    assert len(NODES) == len(WORKFLOW["workflow_nodes"]), "node identifiers must be unique"
    for node_id, node in NODES.items():
        ujt = node["unified_job_template"]
        assert ujt["type"] in ("job_template", "workflow_approval"), node_id
        if ujt["type"] == "job_template":
            assert ujt["name"] in TEMPLATES, node_id
            if "limit" in node:
                assert TEMPLATES[ujt["name"]]["ask_limit_on_launch"] is True, node_id
        for kind in ("success", "failure", "always"):
            assert set(edges(node_id, kind)) <= set(NODES), (node_id, kind)
    roots = set(NODES) - {target for n in NODES for k in ("success", "failure", "always") for target in edges(n, k)}
    assert roots == {"canary"}


def test_workflow_is_canary_then_approval_with_a_timeout_then_the_fleet_with_rollback_when_not_approved():
    canary, approve = NODES["canary"], NODES["approve"]
    assert canary["unified_job_template"]["name"] == "ebpf.fleet deploy"
    assert canary["limit"] in inventory_groups()
    assert edges("canary", "success") == ["approve"]
    assert approve["unified_job_template"]["type"] == "workflow_approval"
    assert 0 < approve["unified_job_template"]["timeout"] <= 24 * 3600
    (fleet,) = edges("approve", "success")
    assert NODES[fleet]["unified_job_template"]["name"] == "ebpf.fleet deploy" and "limit" not in NODES[fleet]
    (rollback,) = edges("approve", "failure")
    assert NODES[rollback]["unified_job_template"]["name"] == "ebpf.fleet rollback"
    assert NODES[rollback]["limit"] == canary["limit"], "roll back exactly the hosts the canary committed"
    # every path ends in a status report
    for node_id in ("canary",):
        assert edges(node_id, "failure") == ["status"]
    for node_id in (fleet, rollback):
        assert edges(node_id, "always") == ["status"]
    assert NODES["status"]["unified_job_template"]["name"] == "ebpf.fleet status"


def test_workflow_survey_questions_match_the_deploy_template_bounds():
    deploy = {q["variable"]: q for q in TEMPLATES["ebpf.fleet deploy"]["survey_spec"]["spec"]}
    for question in WORKFLOW["survey_spec"]["spec"]:
        mine = deploy[question["variable"]]
        assert question["type"] == mine["type"], question["variable"]
        assert mine["min"] <= question["min"] <= question["max"] <= mine["max"], question["variable"]
        # what the workflow passes down, the deploy template's survey accepts
        assert awx_survey.answer_errors(mine, question["default"]) == []
