"""The job templates and the canary workflow of examples/awx, run the way AWX runs them, against lab hosts.

AWX itself cannot run here (no container images); what it does for a job is reproduced with the pieces it uses:

* the project update installs the collection from the project's ``collections/requirements.yml`` with
  ``ansible-galaxy collection install``, in the project folder, into the job's private data dir
  (``requirements_collections``), and the job sees only that collection path;
* ``harness.awx_job`` resolves a template or a workflow node, its survey answers (checked by AWX's rules),
  launch prompts and the artifacts of earlier nodes into extra vars, the limit, forks and verbosity;
* ``ansible_runner.run`` runs the playbook in that private data dir, as the controller's job does, and the
  artifacts a workflow hands on are the ``artifact_data`` of the run's ``playbook_on_stats`` event (set_stats).

The workflow's nodes run in the order AWX would run them on one path (canary, then the fleet), and then its other
branches (rollback of the canary, status) on the state the fleet node left. Every run is checked for warnings.
"""

import glob
import json
import os
import shutil
import subprocess

import ansible_runner
import pytest
from harness import awx_job, paths
from harness.netns_lab import NetnsLab

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

EDGES = ["edge1", "edge2"]
NOT_EDGES = ["backend1", "backend2", "lb1"]
GATE_WINDOW = 2  # seconds; the surveys' defaults (30, 60) would only make the test slower
# no rise of the filter's drops while nobody sends traffic: passes
QUIET = {"name": "no drops", "query": "deployments.filter.counters.filter_stats.verdicts.drop", "max": 0}
# a rise of passed packets, with nobody sending: fails
BUSY = {"name": "web traffic passes", "query": "deployments.filter.counters.filter_stats.verdicts.pass", "min": 1}


class Controller:
    """One project, one inventory (the lab's), jobs run by ansible-runner in private data dirs of their own."""

    def __init__(self, lab: NetnsLab, folder):
        self.lab = lab
        self.folder = str(folder)
        self.config = awx_job.load_config()
        self.runs = 0
        self.collections = os.path.join(self.folder, "requirements_collections")
        # the project update: the project's files in a folder of their own (AWX checks the project out; a job
        # writes there, as status.yml's JSON report does), then the collections of its collections/requirements.yml
        self.project = os.path.join(self.folder, "project")
        subprocess.run(
            ["rsync", "-a", "--exclude", ".git", "--exclude", ".venv*", "--exclude", "build", "--exclude", "__pycache__", paths.REPO + "/", self.project + "/"],
            check=True,
        )
        proc = subprocess.run(
            [
                os.path.join(os.path.dirname(paths.PYTHON), "ansible-galaxy"),
                "collection",
                "install",
                "-r",
                "collections/requirements.yml",
                "-p",
                self.collections,
            ],
            cwd=self.project,
            env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=self.collections),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "[WARNING]" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr

    def run(self, launch: awx_job.JobLaunch):
        """Run one job; returns (runner, artifacts, stdout)."""
        self.runs += 1
        private = os.path.join(self.folder, "job%d" % self.runs)
        os.makedirs(private)
        awx_job.runner_config(launch, private, self.lab.inventory, project=self.project)
        envvars = {
            "PATH": os.path.dirname(paths.PYTHON) + os.pathsep + os.environ["PATH"],
            # the job sees the collection the project update installed, and nothing else
            "ANSIBLE_COLLECTIONS_PATH": self.collections,
            "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False",
            "ANSIBLE_PYTHON_INTERPRETER": paths.PYTHON,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
        }
        runner = ansible_runner.run(envvars=envvars, quiet=True, timeout=900, **launch.runner_kwargs(private, self.lab.inventory))
        stdout = runner.stdout.read()
        assert "[WARNING]" not in stdout and "[DEPRECATION WARNING]" not in stdout, stdout
        assert "Traceback" not in stdout, stdout
        stats = [event for event in runner.events if event["event"] == "playbook_on_stats"]
        assert len(stats) == 1, stdout
        return runner, stats[0]["event_data"].get("artifact_data", {}), stdout

    def command(self, runner) -> list:
        """The ansible-playbook command line the job ran, from the runner's artifacts."""
        with open(os.path.join(runner.config.artifact_dir, "command"), encoding="utf-8") as handle:
            return json.load(handle)["command"]

    def deployments(self, host) -> dict:
        return self.lab.info(host)["deployments"]


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    lab = NetnsLab(tmp_path_factory.mktemp("awx"), edges=len(EDGES))
    proc = lab.sh("up")
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # the fleet's waves: the edges first, then the load balancer and its backends
        for host in NOT_EDGES:
            lab.vars_file("host_vars", host, {"deploy_xdp_wave": 1})
        lab.vars_file("host_vars", "edge1", {"deploy_xdp_health_gates": [QUIET]})
        yield Controller(lab, tmp_path_factory.mktemp("controller"))
    finally:
        lab.sh("down")


def test_the_project_update_installs_the_collection_from_the_projects_requirements(controller):
    installed = os.path.join(controller.collections, "ansible_collections", "ebpf", "fleet")
    with open(os.path.join(installed, "MANIFEST.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)["collection_info"]
    assert (manifest["namespace"], manifest["name"]) == ("ebpf", "fleet")
    assert os.path.isfile(os.path.join(installed, "playbooks", "deploy_xdp.yml"))
    assert not os.path.islink(installed)


def test_a_dry_run_of_the_deploy_template_on_the_canary_changes_nothing_and_says_what_would(controller):
    launch = awx_job.job_launch(
        controller.config,
        "ebpf.fleet deploy",
        {"deploy_xdp_hosts": "all", "deploy_xdp_gate_window": GATE_WINDOW},
        limit="canary",
        job_type="check",
        diff_mode=True,
    )
    runner, artifacts, stdout = controller.run(launch)
    assert runner.status == "successful", stdout
    command = controller.command(runner)
    assert command[command.index("--limit") + 1] == "canary"
    assert command[command.index("--forks") + 1] == "20"
    assert "--check" in command and "--diff" in command
    result = artifacts["ebpf_fleet_deploy"]
    assert result["check_mode"] is True
    assert (result["result"], result["health_gate"]) == ("passed", "not_run")
    assert {host: item["result"] for host, item in result["hosts"].items()} == {"edge1": "checked"}
    assert controller.deployments("edge1") == {}
    assert runner.stats["changed"].get("edge1", 0) > 0  # it says what it would change


def test_the_workflows_canary_node_deploys_the_canary_and_publishes_a_passed_gate(controller):
    launch = awx_job.workflow_node_launch(controller.config, "ebpf.fleet canary rollout", "canary", {"deploy_xdp_gate_window": GATE_WINDOW})
    runner, artifacts, stdout = controller.run(launch)
    assert runner.status == "successful", stdout
    assert launch.limit == "canary" and launch.extra_vars["deploy_xdp_serial"] == "25%"
    result = artifacts["ebpf_fleet_deploy"]
    assert (result["result"], result["health_gate"]) == ("passed", "passed"), result
    edge1 = result["hosts"]["edge1"]
    assert (edge1["result"], edge1["changed"]) == ("deployed", ["filter"]), result
    assert [(gate["name"], gate["ok"]) for gate in edge1["gates"]] == [("no drops", True)]
    assert result["changed_hosts"] == ["edge1"] and result["failed_hosts"] == []
    assert set(controller.deployments("edge1")) == {"filter"}
    assert controller.deployments("edge2") == {}
    controller.canary_artifacts = artifacts


def test_the_workflows_fleet_node_stops_at_a_failed_gate_reverts_the_host_and_publishes_why(controller):
    controller.lab.vars_file("host_vars", "edge2", {"deploy_xdp_health_gates": [BUSY]})
    # AWX hands the canary's artifacts to the next nodes as extra vars; the workflow survey's answers win
    launch = awx_job.workflow_node_launch(
        controller.config,
        "ebpf.fleet canary rollout",
        "fleet",
        {"deploy_xdp_gate_window": GATE_WINDOW, "deploy_xdp_serial": "0"},
        artifacts=controller.canary_artifacts,
    )
    assert launch.extra_vars["ebpf_fleet_deploy"]["result"] == "passed"
    runner, artifacts, stdout = controller.run(launch)
    assert runner.status == "failed", stdout
    assert "--limit" not in controller.command(runner)
    result = artifacts["ebpf_fleet_deploy"]
    assert (result["result"], result["health_gate"]) == ("failed", "failed"), result
    assert {host: item["result"] for host, item in result["hosts"].items()} == dict(
        {"edge1": "deployed", "edge2": "gate_failed"}, **{host: "pending" for host in NOT_EDGES}
    ), result
    assert result["failed_hosts"] == ["edge2"] and result["pending_hosts"] == NOT_EDGES
    assert 'gate "web traffic passes"' in result["hosts"]["edge2"]["message"], result
    assert [gate["ok"] for gate in result["hosts"]["edge2"]["gates"]] == [False]
    assert result["hosts"]["edge1"]["changed"] == [] and result["changed_hosts"] == []
    # edge2 runs what it ran before (nothing), the canary keeps its version, the later wave was never started
    assert controller.deployments("edge2") == {}
    assert set(controller.deployments("edge1")) == {"filter"}
    assert all(controller.deployments(host) == {} for host in NOT_EDGES)
    assert not set(runner.stats["changed"]) & set(NOT_EDGES)
    # the canary of the same batch was confirmed and committed before the rollout stopped: nothing left armed
    assert all(not os.path.exists(os.path.join(controller.lab.state_dir(host), ".checkpoint")) for host in EDGES)
    assert "rollout stopped after batch" in stdout, stdout


def test_the_workflows_rollback_node_returns_the_canary_to_its_previous_version(controller):
    launch = awx_job.workflow_node_launch(controller.config, "ebpf.fleet canary rollout", "rollback_canary")
    runner, artifacts, stdout = controller.run(launch)
    assert runner.status == "successful", stdout
    assert controller.command(runner)[controller.command(runner).index("--limit") + 1] == "canary"
    # the canary's first deploy created the filter: its previous version is none
    assert artifacts["ebpf_fleet_rollback"]["hosts"]["edge1"]["filter"]["status"] == "removed", artifacts
    assert controller.deployments("edge1") == {}


def test_the_status_node_and_template_publish_the_fleets_status(controller):
    launch = awx_job.workflow_node_launch(controller.config, "ebpf.fleet canary rollout", "status")
    runner, artifacts, stdout = controller.run(launch)
    assert runner.status == "successful", stdout
    status = artifacts["ebpf_fleet_status"]
    assert status["status"] == "in_sync" and status["drifted_hosts"] == [], status
    assert set(status["hosts"]) >= set(EDGES + NOT_EDGES)
    # the template, its survey asking to fail on drift (a multiple choice answered "true"): in sync, so it passes
    launch = awx_job.job_launch(controller.config, "ebpf.fleet status", {"ebpf_fleet_status_fail_on_drift": "true"}, limit="edges")
    runner, artifacts, stdout = controller.run(launch)
    assert runner.status == "successful", stdout
    assert artifacts["ebpf_fleet_status"]["status"] == "in_sync"


def test_the_remove_template_needs_its_hosts_and_then_cleans_them(controller):
    with pytest.raises(Exception, match="ebpf_fleet_remove_hosts"):
        awx_job.job_launch(controller.config, "ebpf.fleet remove", {})  # no default on purpose
    launch = awx_job.job_launch(controller.config, "ebpf.fleet remove", {"ebpf_fleet_remove_hosts": "edges"})
    runner, _artifacts, stdout = controller.run(launch)
    assert runner.status == "successful", stdout
    for host in EDGES:
        assert not os.path.exists(controller.lab.state_dir(host)), host
        assert not glob.glob(os.path.join(controller.lab.pin_root(host), "*")), host
    shutil.rmtree(controller.folder, ignore_errors=True)
