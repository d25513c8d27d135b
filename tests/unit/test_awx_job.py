"""tests/harness/awx_job.py: a job template or workflow node of examples/awx becomes the ansible-runner input the
controller would write (private data dir, env/extravars, the ansible-playbook command line), with AWX's survey
rules and prompt rules applied. Nothing is run: part 3 of issue 12 runs these against lab hosts."""

import json
import os

import pytest
from harness import awx_job, awx_survey, paths

CONFIG = awx_job.load_config()
INVENTORY = os.path.join(paths.REPO, "examples", "inventory", "hosts.ini")
WORKFLOW = "ebpf.fleet canary rollout"


def command(launch, tmp_path):
    config = awx_job.runner_config(launch, str(tmp_path / "pdd"), INVENTORY)
    extra = json.loads((tmp_path / "pdd" / "env" / "extravars").read_text())
    return config.command, extra


def test_a_deploy_launch_with_its_defaults_is_ansible_playbook_with_the_survey_as_extra_vars(tmp_path):
    launch = awx_job.job_launch(CONFIG, "ebpf.fleet deploy")
    cmd, extra = command(launch, tmp_path)
    assert cmd[0] == "ansible-playbook" and cmd[-1] == "playbooks/deploy_xdp.yml"
    assert cmd[cmd.index("-i") + 1] == INVENTORY and cmd[cmd.index("--forks") + 1] == "20"
    assert "--limit" not in cmd and "--check" not in cmd
    assert "@%s" % (tmp_path / "pdd" / "env" / "extravars") in cmd
    assert extra == {
        "deploy_xdp_hosts": "all",
        "deploy_xdp_serial": "0",
        "deploy_xdp_max_fail_percentage": 0,
        "deploy_xdp_confirm_timeout": 60,
        "deploy_xdp_gate_window": 30,
        "deploy_xdp_fast_rerun": "true",
    }
    assert os.path.isfile(tmp_path / "pdd" / "project" / launch.playbook)


def test_a_dry_run_with_functions_and_a_limit_is_check_mode_with_tags(tmp_path):
    launch = awx_job.job_launch(
        CONFIG, "ebpf.fleet deploy", {"deploy_xdp_serial": "25%"}, job_type="check", job_tags="xdp_filter", limit="edges", diff_mode=True
    )
    cmd, extra = command(launch, tmp_path)
    assert cmd[cmd.index("--limit") + 1] == "edges" and cmd[cmd.index("--tags") + 1] == "xdp_filter"
    assert "--check" in cmd and "--diff" in cmd
    assert extra["deploy_xdp_serial"] == "25%"


def test_a_prompt_the_template_does_not_ask_for_is_refused_by_name():
    with pytest.raises(
        awx_job.LaunchError,
        match=r"ebpf.fleet status: job_type='check' given at launch, but "
        r"ask_job_type_on_launch is not true",
    ):
        awx_job.job_launch(CONFIG, "ebpf.fleet status", job_type="check")
    with pytest.raises(awx_job.LaunchError, match="job_type 'dry': expected run or check"):
        awx_job.job_launch(CONFIG, "ebpf.fleet deploy", job_type="dry")


def test_survey_answers_go_through_awx_rules():
    with pytest.raises(awx_survey.SurveyError, match=r"answer 5 for deploy_xdp_confirm_timeout: expected at least min=10"):
        awx_job.job_launch(CONFIG, "ebpf.fleet deploy", {"deploy_xdp_confirm_timeout": 5})
    with pytest.raises(awx_survey.SurveyError, match="required variable 'ebpf_fleet_remove_hosts'"):
        awx_job.job_launch(CONFIG, "ebpf.fleet remove")
    launch = awx_job.job_launch(CONFIG, "ebpf.fleet rollback", {"rollback_names": ["filter"]})
    assert launch.extra_vars == {"rollback_hosts": "all", "rollback_names": ["filter"], "rollback_serial": "0"}


def test_the_canary_node_runs_deploy_on_the_canary_group_with_the_workflow_survey_winning(tmp_path):
    launch = awx_job.workflow_node_launch(
        CONFIG, WORKFLOW, "canary", {"deploy_xdp_gate_window": 120}, artifacts={"deploy_xdp_gate_window": 5, "from_an_earlier_node": True}
    )
    cmd, extra = command(launch, tmp_path)
    assert cmd[cmd.index("--limit") + 1] == "canary" and cmd[-1] == "playbooks/deploy_xdp.yml"
    assert extra == {
        "deploy_xdp_hosts": "all",
        "deploy_xdp_serial": "25%",
        "deploy_xdp_max_fail_percentage": 0,
        "deploy_xdp_confirm_timeout": 60,
        "deploy_xdp_gate_window": 120,
        "deploy_xdp_fast_rerun": "true",
        "from_an_earlier_node": True,
    }


def test_the_fleet_node_has_no_limit_and_the_rollback_node_rolls_back_the_canary_only():
    fleet = awx_job.workflow_node_launch(CONFIG, WORKFLOW, "fleet")
    assert fleet.limit == "" and fleet.playbook == "playbooks/deploy_xdp.yml"
    rollback = awx_job.workflow_node_launch(CONFIG, WORKFLOW, "rollback_canary")
    assert rollback.limit == "canary" and rollback.playbook == "playbooks/rollback.yml"
    with pytest.raises(awx_job.LaunchError, match="node 'approve' is a workflow_approval: expected a job_template node"):
        awx_job.workflow_node_launch(CONFIG, WORKFLOW, "approve")
    with pytest.raises(awx_job.LaunchError, match=r"node 'nope': expected one of \['approve', 'canary'"):
        awx_job.workflow_node_launch(CONFIG, WORKFLOW, "nope")


def test_a_configuration_folder_defining_a_key_twice_is_refused(tmp_path):
    (tmp_path / "a.yml").write_text("controller_templates: []\n")
    (tmp_path / "b.yml").write_text("controller_templates: []\n")
    with pytest.raises(awx_job.LaunchError, match=r"b.yml: \['controller_templates'\] already defined"):
        awx_job.load_config(str(tmp_path))
