"""Safe rollouts over real SSH (the SSH lab: playbooks run in the controller namespace, every management packet
crosses the edges' XDP filter): a change that cuts the controller off reverts by itself, a canary whose health
gate fails is rolled back and stops the rollout, a host failing inside a rescue stops it too, rollback.yml
returns the fleet to the previous version, and a controller killed mid-wave leaves no change half confirmed.

One lab of five edges serves the whole module (sshd, keys and a first deploy are the slow part). The tests run in
an order that lets each start from where the last one left the fleet (every deploy over SSH costs a minute or
more); run alone, each still deploys what it needs first. Every ansible-playbook run must be free of [WARNING].
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from harness import paths
from harness.runner import run_module
from harness.ssh_lab import SshLab, live_pids

from ansible_collections.ebpf.fleet.plugins.filter import xdp_filter_port_entries as port_plugin
from ansible_collections.ebpf.fleet.plugins.filter import xdp_filter_v4_entries as v4_plugin

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

DEPLOY = os.path.join(paths.REPO, "playbooks", "deploy_xdp.yml")
ROLLBACK = os.path.join(paths.REPO, "playbooks", "rollback.yml")
EDGES = ["edge1", "edge2", "edge3", "edge4", "edge5"]
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
DEPLOY_PLAY = "Deploy the network functions of each host's groups"
HOST_LINE = re.compile(r"^(?:ok|changed|skipping|fatal|failed): \[([^\]\s]+)(?: -> [^\]]+)?\]", re.M)
WINDOW = 15  # the confirm window of these tests (the default is 60 s)

BASE = {  # the baseline policy every test starts from and returns to (group_vars/edges.yml)
    "deploy_xdp_confirm_timeout": WINDOW,
    "xdp_filter_default_verdict": "drop",
    "xdp_filter_v4_rules": [{"cidr": "192.0.2.0/24", "action": "drop", "rule_id": 2}],
    "xdp_filter_port_rules": [{"proto": "tcp", "port": 80, "action": "pass", "rule_id": 10}],
    "xdp_filter_mgmt_v4": ["198.51.100.0/28"],  # the controller, 198.51.100.2, is a management source
}
# a new version: one more source dropped (a documentation range nobody in the lab uses)
UPGRADE = dict(BASE, xdp_filter_v4_rules=BASE["xdp_filter_v4_rules"] + [{"cidr": "203.0.113.0/24", "action": "drop", "rule_id": 3}])
# TCP SYNs from the ordinary client 198.51.100.33 to port 80 of every edge, 20 a second, until killed: the traffic
# the health gate watches (the filter passes TCP/80; nothing listens, the edge answers with a reset)
WEB_TRAFFIC = r"""
import socket, sys, time
targets = sys.argv[1:]
while True:
    for addr in targets:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind(("198.51.100.33", 0))
        try:
            s.connect((addr, 80))
        except OSError:
            pass
        s.close()
    time.sleep(0.05)
"""


def assert_no_warning(proc):
    out = proc.stdout + proc.stderr
    assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out
    assert "Traceback" not in out, out


def recap(proc) -> dict:
    return {host: tuple(int(n) for n in nums) for host, *nums in RECAP.findall(proc.stdout)}


def batches(proc) -> list:
    chunks = proc.stdout.split("PLAY [%s]" % DEPLOY_PLAY)[1:]
    return [sorted(set(HOST_LINE.findall(chunk.split("\nPLAY ")[0]))) for chunk in chunks]


class Fleet:
    """The SSH lab plus what the tests read from its hosts (through bpf_info, as a module on the host)."""

    def __init__(self, lab: SshLab):
        self.lab = lab

    def vars(self, kind, name, data):
        folder = os.path.join(self.lab.dir, kind)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name + ".yml")
        if data is None:
            if os.path.exists(path):
                os.unlink(path)
            return
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(data, handle)

    def clear_vars(self):
        """No test's host variables, nor group_vars/all, left in the lab's inventory."""
        for kind, name in [("host_vars", h) for h in EDGES] + [("group_vars", "all")]:
            self.vars(kind, name, None)

    def deploy(self, extra=None, **kwargs):
        return self.lab.playbook(DEPLOY, extra_vars=dict({"deploy_xdp_hosts": "edges"}, **(extra or {})), **kwargs)

    def state_dir(self, host):
        return os.path.join(self.lab.dir, "state", host, "records")

    def info(self, host, **args):
        result = run_module("bpf_info", dict({"pin_root": self.lab.pin_root(host), "state_dir": self.state_dir(host)}, **args), netns=self.lab.netns(host))
        assert not result.failed, result
        return result

    def filter(self, host) -> dict:
        """What the host's filter runs: program (tag, checksum, chain position, mode), the declared plain maps,
        and whether the kernel holds what the records say."""
        info = self.info(host, contents=True, check_records=True)["deployments"].get("filter")
        if info is None:
            return {}
        hook = info["drift"]["hooks"][0]
        return {
            "tag": hook["tag"],
            "sha": info["object_sha256"],
            "position": hook["position"],
            "mode": hook["mode"],
            "drift": info["drift"]["state"],
            "maps": {name: info["maps"][name].get("entries") for name in ("filter_config", "filter_mgmt_v4", "filter_mgmt_ports")},
        }

    def holds(self, host, policy) -> bool:
        """The swappable rule sets hold exactly the policy's rules (bpf_map in check mode predicts no change)."""
        for name, entries in (
            ("filter_v4", v4_plugin.xdp_filter_v4_entries(policy["xdp_filter_v4_rules"])),
            ("filter_ports", port_plugin.xdp_filter_port_entries(policy["xdp_filter_port_rules"])),
        ):
            result = run_module(
                "bpf_map",
                {"name": "filter", "map": name, "mode": "sync", "entries": entries, "pin_root": self.lab.pin_root(host)},
                netns=self.lab.netns(host),
                check_mode=True,
            )
            assert not result.failed, result
            if result.changed:
                return False
        return True

    def on(self, policy, hosts) -> dict:
        """{host: True when it runs the policy: its rule sets hold exactly the policy's rules and, for the baseline,
        the filter is exactly the one the first deploy left (program, position, mode, declared maps, in sync)};
        the hosts are read in parallel (a module run each costs a second)."""

        def one(host):
            if not self.holds(host, policy):
                return False
            current = self.filter(host)
            return current == self.base[host] if policy is BASE else current.get("drift") == "in_sync"

        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            return dict(zip(hosts, pool.map(one, hosts)))

    def pending(self, host):
        path = os.path.join(self.state_dir(host), ".checkpoint", "pending.json")
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None

    def armed(self, host) -> list:
        """What is still armed on the host: a checkpoint whose change started (it has a watchdog), a watchdog
        process. (A checkpoint whose controller died before the change's first step has neither: nothing to
        revert; the next run's arm replaces it.)"""
        left = []
        pending = self.pending(host)
        if pending and pending.get("launcher"):
            left.append(pending)
        left += live_pids(cmdline_contains="checkpoint watch --state-dir %s " % self.state_dir(host))
        return left

    def reaches(self, host) -> bool:
        return self.lab.ssh(host, "true", timeout=30).returncode == 0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with SshLab(tmp_path_factory.mktemp("rollouts"), edges=len(EDGES)) as lab:
        fleet = Fleet(lab)
        fleet.vars("group_vars", "edges", BASE)
        first = fleet.deploy()
        assert first.returncode == 0, first.stdout + first.stderr
        assert_no_warning(first)
        fleet.base = {host: fleet.filter(host) for host in EDGES}
        assert all(s["drift"] == "in_sync" for s in fleet.base.values()), fleet.base
        yield fleet


@pytest.fixture
def baseline(fleet):
    """The baseline policy on every edge and no test's variables left; deployed again only when a host lacks it
    (each deploy over SSH costs a minute or more). The filter every edge ran after the first deploy."""
    fleet.clear_vars()
    fleet.vars("group_vars", "edges", BASE)
    if not all(fleet.on(BASE, EDGES).values()):
        proc = fleet.deploy()
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return fleet.base


def test_a_filter_that_locks_the_controller_out_reverts_within_the_window(fleet, baseline):
    # edge1: no management source, the controller's address not added, default drop: SSH from the controller is
    # dropped by the filter itself (the fail-safe refusal overridden on purpose)
    fleet.vars("host_vars", "edge1", {"xdp_filter_mgmt_v4": [], "xdp_filter_mgmt_include_controller": False, "xdp_filter_allow_lockout": True})
    proc = fleet.deploy(limit="edge1")
    assert proc.returncode != 0
    assert_no_warning(proc)
    out = proc.stdout
    assert "rolled back at " in out and "not confirmed within %ss of the last change" % WINDOW in out, out
    assert "filter restored" in out, out
    report = json.load(open(os.path.join(fleet.state_dir("edge1"), ".reverted.json"), encoding="utf-8"))
    assert report["by"] == "watchdog"
    # the window counts from the change's last step; the host reverted within it plus 5 s
    assert report["reverted_at"] - report["last_change"] <= WINDOW + 5, report
    assert fleet.reaches("edge1")
    assert fleet.on(BASE, ["edge1"]) == {"edge1": True}
    assert fleet.armed("edge1") == []
    assert recap(proc)["edge1"][2] == 1  # the failure is the confirm's, not an unreachable host


def test_a_canary_whose_health_gate_fails_is_rolled_back_and_the_later_waves_are_never_touched(fleet, baseline):
    bad = dict(
        BASE, xdp_filter_v4_rules=BASE["xdp_filter_v4_rules"] + [{"cidr": "198.51.100.32/28", "action": "drop", "rule_id": 4}]
    )  # drops the web client 198.51.100.33
    fleet.vars(
        "group_vars",
        "edges",
        dict(
            bad,
            deploy_xdp_wave=1,
            deploy_xdp_gate_window=4,
            deploy_xdp_health_gates=[
                {
                    "name": "web traffic passes",
                    "query": "deployments.filter.counters.filter_stats.verdicts.drop",
                    "of": "deployments.filter.counters.filter_stats.verdicts",
                    "max": 0.2,
                }
            ],
        ),
    )
    fleet.vars("host_vars", "edge1", {"deploy_xdp_wave": 0})
    web = subprocess.Popen(
        ["nsenter", "--net=/run/netns/%s" % fleet.lab.netns("client"), sys.executable, "-c", WEB_TRAFFIC] + [fleet.lab.address(h) for h in EDGES]
    )
    try:
        proc = fleet.deploy()
    finally:
        web.kill()
        web.wait()
    assert proc.returncode != 0
    assert_no_warning(proc)
    assert 'health gate failed: gate "web traffic passes"' in proc.stdout, proc.stdout
    assert "edge1: rolled back to its previous deployments" in proc.stdout, proc.stdout
    assert batches(proc) == [["edge1"]], proc.stdout
    assert all(fleet.on(BASE, EDGES).values())
    assert all(fleet.armed(host) == [] for host in EDGES)
    for host in EDGES[1:]:
        assert recap(proc)[host] == (0, 0, 0), proc.stdout  # the rollout's plan only


def descendants(pid: int) -> list:
    """pid and every process below it."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name, encoding="utf-8") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def test_a_controller_killed_mid_wave_leaves_armed_hosts_to_revert_and_a_rerun_converges(fleet, baseline):
    fleet.vars("group_vars", "all", {"deploy_xdp_serial": [1, 2, "100%"]})  # edge1 | edge2, edge3 | edge4, edge5
    fleet.vars("group_vars", "edges", UPGRADE)
    running = fleet.deploy(background=True)
    # the controller dies once edge2's change took its first step (its watchdog runs)
    deadline = time.monotonic() + 300
    while not (fleet.pending("edge2") or {}).get("launcher"):
        assert running.poll() is None and time.monotonic() < deadline, "edge2's change never started"
        time.sleep(0.05)
    for pid in descendants(running.pid):  # ansible-playbook, its workers, their ssh
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    killed = time.monotonic()
    running.wait()
    for host in ("edge2", "edge3"):  # every host whose change started reverts by itself
        while fleet.armed(host):
            assert time.monotonic() < killed + WINDOW + 30, "%s did not revert by itself" % host
            time.sleep(0.2)
    assert fleet.reaches("edge2") and fleet.reaches("edge3")
    # edge2 and edge3 reverted (or never changed), edge4 and edge5 never reached; edge1's batch was committed
    assert all(fleet.on(BASE, EDGES[1:]).values()) and fleet.on(UPGRADE, ["edge1"]) == {"edge1": True}
    assert all(fleet.armed(host) == [] for host in EDGES)

    fleet.vars("group_vars", "all", None)  # the re-run, all at once
    rerun = fleet.deploy()
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_no_warning(rerun)
    assert all(fleet.on(UPGRADE, EDGES).values())
    assert recap(rerun)["edge1"][0] == 0, rerun.stdout  # already there


def test_rollback_returns_every_host_to_the_previous_version(fleet):
    # the upgrade on every host (the previous test's re-run left it there; deployed here when run alone), then
    # rollback.yml: each host's previous committed version is the baseline
    fleet.clear_vars()
    fleet.vars("group_vars", "edges", UPGRADE)
    if not all(fleet.on(UPGRADE, EDGES).values()):
        up = fleet.deploy()
        assert up.returncode == 0, up.stdout + up.stderr
        assert all(fleet.on(UPGRADE, EDGES).values())
    check = fleet.lab.playbook(ROLLBACK, extra_vars={"rollback_hosts": "edges"}, check=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert_no_warning(check)
    assert all(fleet.on(UPGRADE, EDGES).values())  # check mode changed nothing
    back = fleet.lab.playbook(ROLLBACK, extra_vars={"rollback_hosts": "edges"})
    assert back.returncode == 0, back.stdout + back.stderr
    assert_no_warning(back)
    assert {host: counts[0] for host, counts in recap(back).items()} == {host: 1 for host in EDGES}, back.stdout
    assert "edge1: filter restored" in back.stdout, back.stdout
    assert all(fleet.on(BASE, EDGES).values())


def test_a_host_failing_inside_a_rescue_stops_the_rollout_at_max_fail_percentage_0(fleet, baseline):
    # edges 1-4 in wave 0, edge5 in wave 1; edge3's filter_config is refused by the map after its program and
    # rules changed: its role's rescue and the play's rescue revert it, and the play counts it as failed
    fleet.vars("group_vars", "edges", dict(UPGRADE, deploy_xdp_max_fail_percentage=0))
    fleet.vars("host_vars", "edge5", {"deploy_xdp_wave": 1})
    fleet.vars("host_vars", "edge3", {"xdp_filter_config": {"non_ip": "sometimes"}})
    proc = fleet.deploy()
    assert proc.returncode != 0
    assert_no_warning(proc)
    assert batches(proc) == [EDGES[:4]], proc.stdout
    assert "edge3: task 'Deploy the network functions" not in proc.stdout
    assert "sometimes" in proc.stdout and "rolled back: the host runs its previous deployments again" in proc.stdout
    # edge3 reverted, edge5 never started
    assert fleet.on(BASE, ["edge3", "edge5"]) == {"edge3": True, "edge5": True}
    assert recap(proc)["edge5"] == (0, 0, 0), proc.stdout  # the rollout's plan only
    # the rest of the batch finished before the stop: confirmed and committed, nothing left armed to revert later
    assert all(fleet.on(UPGRADE, ["edge1", "edge2", "edge4"]).values())
    assert all(fleet.armed(host) == [] for host in EDGES)
    assert "rollout stopped after batch" in proc.stdout and "1 of 4 hosts failed (edge3)" in proc.stdout, proc.stdout
