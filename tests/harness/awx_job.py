"""What the controller would run for a job template or a workflow node of examples/awx, as ansible-runner input.

AWX launches a job by resolving the template's fields, the launch prompts it allows and the survey answers into
one set of parameters, writing an ansible-runner private data dir (the project, the inventory, ``env/extravars``)
and running ``ansible-playbook`` through ansible-runner. This module does the same resolution from the
configuration files, so that tests can run a template's playbook the way the controller would:

* ``load_config()`` reads ``examples/awx/*.yml`` into one mapping (each top-level key defined once);
* ``job_launch(template, answers, ...)`` resolves one launch: survey defaults and answers checked by
  ``awx_survey`` (AWX's rules), the template's forks and verbosity, and the prompts (limit, job tags, job type,
  diff); a prompt the template does not ask for raises, where AWX would silently ignore it;
* ``workflow_node_launch(workflow, node, answers, artifacts)`` does the same for a node of a workflow: the
  template's survey defaults, the node's extra data, the artifacts of earlier nodes (``set_stats``), then the
  workflow's own survey answers, which win (the precedence AWX documents for workflow extra variables);
* ``runner_config(launch, private_data_dir, inventory)`` writes the private data dir and returns an
  ``ansible_runner`` ``RunnerConfig``, prepared: its ``command`` is the ansible-playbook command line the job
  runs, and ``ansible_runner.run(**launch.runner_kwargs(...))`` runs it.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any

import yaml
from ansible_runner.config.runner import RunnerConfig

from . import awx_survey, paths

AWX_DIR = os.path.join(paths.REPO, "examples", "awx")
PROMPTS = {
    "limit": "ask_limit_on_launch",
    "job_tags": "ask_tags_on_launch",
    "job_type": "ask_job_type_on_launch",
    "diff_mode": "ask_diff_mode_on_launch",
    "verbosity": "ask_verbosity_on_launch",
}


class LaunchError(ValueError):
    """A launch the controller would not run as asked (a prompt the template does not allow, a bad value)."""


def load_config(folder: str = AWX_DIR) -> dict:
    """Every ``*.yml`` of the folder in one mapping; a top-level key defined in two files raises."""
    config: dict = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.yml"))):
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
        if not isinstance(data, dict):
            raise LaunchError("%s: %r: expected a mapping of controller_* variables" % (path, type(data).__name__))
        twice = sorted(set(config) & set(data))
        if twice:
            raise LaunchError("%s: %s already defined by another file of %s: expected each once" % (path, twice, folder))
        config.update(data)
    return config


def by_name(config: dict, key: str, name: str) -> dict:
    items = {item["name"]: item for item in config.get(key, [])}
    if name not in items:
        raise LaunchError("%s: no item named %r: expected one of %s" % (key, name, sorted(items)))
    return items[name]


@dataclass
class JobLaunch:
    """One job as the controller resolves it."""

    template: str
    playbook: str
    extra_vars: dict
    forks: int = 0
    verbosity: int = 0
    limit: str = ""
    job_tags: str = ""
    job_type: str = "run"
    diff_mode: bool = False
    prompts: dict = field(default_factory=dict)

    def cmdline(self) -> str:
        return " ".join(flag for flag, on in (("--check", self.job_type == "check"), ("--diff", self.diff_mode)) if on)

    def runner_kwargs(self, private_data_dir: str, inventory: str) -> dict:
        """Keyword arguments for ansible_runner.run() / RunnerConfig for this job; the extra vars go in the private
        data dir's env/extravars (runner_config writes it), as the controller passes them."""
        kwargs: dict = {"private_data_dir": private_data_dir, "playbook": self.playbook, "inventory": inventory, "verbosity": self.verbosity or None}
        if self.forks:
            kwargs["forks"] = self.forks
        if self.limit:
            kwargs["limit"] = self.limit
        if self.job_tags:
            kwargs["tags"] = self.job_tags
        if self.cmdline():
            kwargs["cmdline"] = self.cmdline()
        return kwargs


def _prompted(template: dict, prompts: dict) -> dict:
    given = {key: value for key, value in prompts.items() if value is not None}
    for key in given:
        if key not in PROMPTS:
            raise LaunchError("%s: launch field %r: expected one of %s" % (template["name"], key, sorted(PROMPTS)))
        if not template.get(PROMPTS[key], False):
            raise LaunchError(
                "%s: %s=%r given at launch, but %s is not true: the controller would ignore it" % (template["name"], key, given[key], PROMPTS[key])
            )
    if given.get("job_type", "run") not in ("run", "check"):
        raise LaunchError("%s: job_type %r: expected run or check" % (template["name"], given["job_type"]))
    return given


def _launch(template: dict, extra_vars: dict, prompts: dict) -> JobLaunch:
    given = _prompted(template, prompts)
    return JobLaunch(
        template=template["name"],
        playbook=template["playbook"],
        extra_vars=extra_vars,
        forks=int(template.get("forks", 0)),
        verbosity=int(given.get("verbosity", template.get("verbosity", 0))),
        limit=given.get("limit", template.get("limit", "")) or "",
        job_tags=given.get("job_tags", template.get("job_tags", "")) or "",
        job_type=given.get("job_type", template.get("job_type", "run")),
        diff_mode=bool(given.get("diff_mode", template.get("diff_mode", False))),
        prompts=given,
    )


def job_launch(config: dict, template_name: str, answers: dict | None = None, **prompts: Any) -> JobLaunch:
    """Launch a job template with survey answers (checked by AWX's rules) and prompts (limit=, job_tags=,
    job_type=, diff_mode=, verbosity=)."""
    template = by_name(config, "controller_templates", template_name)
    extra = dict(yaml.safe_load(template.get("extra_vars") or "{}") if isinstance(template.get("extra_vars"), str) else template.get("extra_vars") or {})
    if template.get("survey_enabled"):
        extra.update(awx_survey.extra_vars(template["survey_spec"], answers or {}))
    elif answers:
        raise LaunchError("%s: answers %s given, but the template has no survey enabled" % (template_name, sorted(answers)))
    return _launch(template, extra, prompts)


def workflow_node_launch(config: dict, workflow_name: str, node_id: str, answers: dict | None = None, artifacts: dict | None = None) -> JobLaunch:
    """The job a workflow node would start: the template's survey defaults, the node's extra data, the artifacts
    of earlier nodes (set_stats), then the workflow's survey answers (checked by AWX's rules)."""
    workflow = by_name(config, "controller_workflows", workflow_name)
    nodes = {node["identifier"]: node for node in workflow["workflow_nodes"]}
    if node_id not in nodes:
        raise LaunchError("%s: node %r: expected one of %s" % (workflow_name, node_id, sorted(nodes)))
    node = nodes[node_id]
    ujt = node["unified_job_template"]
    if ujt.get("type") != "job_template":
        raise LaunchError("%s: node %r is a %s: expected a job_template node" % (workflow_name, node_id, ujt.get("type")))
    template = by_name(config, "controller_templates", ujt["name"])
    extra = (
        awx_survey.extra_vars(template["survey_spec"], node.get("extra_data") or {}) if template.get("survey_enabled") else dict(node.get("extra_data") or {})
    )
    extra.update(artifacts or {})
    if workflow.get("survey_enabled"):
        extra.update(awx_survey.extra_vars(workflow["survey_spec"], answers or {}))
    prompts = {key: node[key] for key in ("limit", "job_tags", "job_type", "diff_mode", "verbosity") if key in node}
    return _launch(template, extra, prompts)


def runner_config(launch: JobLaunch, private_data_dir: str, inventory: str, project: str = paths.REPO) -> RunnerConfig:
    """Write the private data dir as the controller lays it out (project/ with the playbooks, env/extravars) and
    return the prepared RunnerConfig; its ``command`` is what the job runs."""
    os.makedirs(os.path.join(private_data_dir, "env"), exist_ok=True)
    link = os.path.join(private_data_dir, "project")
    if not os.path.lexists(link):
        os.symlink(project, link)
    with open(os.path.join(private_data_dir, "env", "extravars"), "w", encoding="utf-8") as handle:
        json.dump(launch.extra_vars, handle)
    config = RunnerConfig(**launch.runner_kwargs(private_data_dir, inventory))
    config.prepare()
    return config
