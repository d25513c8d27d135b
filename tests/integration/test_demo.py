"""What `make demo` does, in CI: the namespace lab, playbooks/deploy_xdp.yml twice, real traffic, the counters.

The lab runs under its own prefix, pin root and folder (scripts/lab.sh reads them from the environment), so
it never meets a user's lab; it is torn down at the end, pass or fail, and nothing may be left.
"""

import json
import os
import re
import subprocess

import pytest
import yaml

from harness import bpffs as harness_bpffs
from harness import netns as harness_netns
from harness import paths
from harness.runner import run_module, run_playbook

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

LAB = os.path.join(paths.REPO, "scripts", "lab.sh")
POLICY = os.path.join(paths.REPO, "playbooks", "vars", "lab_policy.yml")
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def stat_key(reason: str, verdict: str) -> tuple:
    """filter_stats entries are read back keyed by name: {reason, verdict} (struct fleet_key_filter_stats)."""
    return reason, verdict


def assert_no_warning(proc):
    out = proc.stdout + proc.stderr
    assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out


def recap(proc) -> dict:
    """{host: (changed, unreachable, failed)} from a playbook's PLAY RECAP."""
    return {host: tuple(int(n) for n in nums) for host, *nums in RECAP.findall(proc.stdout)}


@pytest.fixture
def lab(tmp_path):
    """scripts/lab.sh up with a prefix, pin root and folder of this test run; down afterwards."""
    env = dict(os.environ,
               EBFLAB_PREFIX="%s%slab-" % (harness_netns.PREFIX, harness_netns.RUN_ID),
               EBFLAB_DIR=str(tmp_path / "lab"),
               EBFLAB_PIN_ROOT=os.path.join(harness_bpffs.TEST_PIN_BASE, harness_netns.unique("lab")),
               EBFLAB_PYTHON=paths.PYTHON)

    def run(*args):
        return subprocess.run(["bash", LAB] + list(args), env=env, capture_output=True, text=True, timeout=120,
                              check=False)

    try:
        yield env, run
    finally:
        run("down")


def lab_namespaces(prefix: str) -> list:
    try:
        return sorted(name for name in os.listdir("/run/netns") if name.startswith(prefix))
    except FileNotFoundError:
        return []


def test_demo_lab_deploys_the_filter_idempotently_and_counts_real_traffic_then_leaves_nothing(lab):
    env, run = lab
    prefix, lab_dir, pin_base = env["EBFLAB_PREFIX"], env["EBFLAB_DIR"], env["EBFLAB_PIN_ROOT"]
    for _attempt in range(2):  # up is idempotent
        proc = run("up")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lab_namespaces(prefix) == [prefix + "client", prefix + "edge1", prefix + "edge2"]
    assert run("status").returncode == 0
    inventory = os.path.join(lab_dir, "inventory.ini")
    text = open(inventory, encoding="utf-8").read()
    for host in ("edge1", "edge2"):   # each edge: its own pin root and state dir
        assert "ebpf_fleet_pin_root=%s/%s " % (pin_base, host) in text
        assert "ebpf_fleet_state_dir=%s/state/%s " % (lab_dir, host) in text

    playbook = os.path.join(paths.REPO, "playbooks", "deploy_xdp.yml")
    first = run_playbook(playbook, inventory=inventory)
    assert first.returncode == 0, first.stdout + first.stderr
    assert_no_warning(first)
    assert recap(first)["edge1"][0] > 0 and recap(first)["edge2"][0] > 0
    second = run_playbook(playbook, inventory=inventory)
    assert second.returncode == 0, second.stdout + second.stderr
    assert_no_warning(second)
    # the client (no interfaces to filter) only takes part in planning the waves
    assert {host: counts[0] for host, counts in recap(second).items()} == {"client": 0, "edge1": 0, "edge2": 0}, \
        second.stdout
    for host in ("edge1", "edge2"):
        assert os.path.exists(os.path.join(pin_base, host, "filter", "maps", "filter_stats"))
        assert os.path.exists(os.path.join(lab_dir, "state", host, "filter", "deployment.json"))
        link = json.loads(subprocess.run(["ip", "-n", prefix + host, "-j", "-d", "link", "show", "lab0"],
                                         capture_output=True, text=True, check=True).stdout)[0]
        assert link["xdp"]["mode"] == 1  # native XDP on the edge's veth

    # the client sends the demo's cases to both edges
    with open(POLICY, encoding="utf-8") as handle:
        cases = yaml.safe_load(handle)["lab_traffic_cases"]
    spec = {"targets": {"edge1": "198.51.100.11", "edge2": "198.51.100.12"}, "cases": cases, "count": 2, "timeout": 0.3}
    script = os.path.join(paths.REPO, "playbooks", "files", "lab_traffic.py")
    proc = harness_netns.in_netns(prefix + "client", [paths.PYTHON, script, json.dumps(spec)])
    sent = json.loads(proc.stdout)
    for host in ("edge1", "edge2"):
        answered = {name: result["answered"] for name, result in sent[host].items()}
        assert answered == {"web": 2, "dns": 0, "other_udp": 0, "denied_source_web": 0, "ssh_from_mgmt": 2,
                            "ssh_from_client": 0}, host

        info = run_module("bpf_info", {"pin_root": os.path.join(pin_base, host),
                                       "state_dir": os.path.join(lab_dir, "state", host),
                                       "contents": True, "max_entries": 4096,
                                       "query": "deployments.filter.maps.{stats: filter_stats.entries, "
                                                "rules: filter_rule_stats.entries}"},
                          netns=prefix + host)
        assert not info.failed, info
        stats = {(e["key"]["reason"], e["key"]["verdict"]): e["value"]["packets"]
                 for e in info["query_result"]["stats"]}
        rules = {e["key"]: e["value"]["packets"] for e in info["query_result"]["rules"] if e["value"]["packets"]}
        assert stats[stat_key("port", "pass")] == 2      # TCP/80 passed by its port rule
        assert stats[stat_key("port", "drop")] == 2      # UDP/53 dropped by its port rule
        assert stats[stat_key("source", "drop")] == 2    # TCP/80 from the denied source 198.51.100.66
        assert stats[stat_key("mgmt", "pass")] == 2      # SSH from the management station, under default deny
        assert stats[stat_key("default", "drop")] == 4   # UDP/5000 and SSH from outside the management range
        assert stats[stat_key("default", "pass")] == 0
        assert rules == {1: 2, 10: 2, 11: 2}

    # the demo playbook wraps the same: deploy (nothing to change), traffic, summary, verdict check
    demo = run_playbook(os.path.join(paths.REPO, "playbooks", "demo.yml"), inventory=inventory)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert_no_warning(demo)
    assert set(recap(demo).values()) == {(0, 0, 0)}
    assert "passed: mgmt 2, port 2" in demo.stdout and "dropped: default 4, source 2, port 2" in demo.stdout

    proc = run("down")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lab_namespaces(prefix) == []
    assert not os.path.exists(pin_base)
    assert not os.path.exists(lab_dir)
    assert run("status").returncode != 0
    assert run("down").returncode == 0  # down is idempotent
