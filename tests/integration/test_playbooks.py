"""The collection's playbooks run against lab hosts that are network namespaces.

Every run through ansible-playbook must be free of [WARNING] and [DEPRECATION WARNING] lines.
"""

import os
import re
import subprocess

import pytest
from harness import paths
from harness.netns_lab import NetnsLab as Lab
from harness.runner import run_module, run_playbook

from ansible_collections.ebpf.fleet.plugins.filter import xdp_filter_port_entries as port_plugin
from ansible_collections.ebpf.fleet.plugins.filter import xdp_filter_v4_entries as v4_plugin

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

DEPLOY = os.path.join(paths.REPO, "playbooks", "deploy_xdp.yml")
CHECK = os.path.join(paths.REPO, "playbooks", "check_xdp_support.yml")
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
# "ok: [edge1]", or "ok: [edge1 -> localhost]" for a task the host delegates to the controller
HOST_LINE = re.compile(r"^(?:ok|changed|skipping|fatal|failed): \[([^\]\s]+)(?: -> [^\]]+)?\]", re.M)


def assert_no_warning(proc):
    out = proc.stdout + proc.stderr
    assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out


def recap(proc) -> dict:
    """{host: (changed, unreachable, failed)} from a playbook's PLAY RECAP."""
    return {host: tuple(int(n) for n in nums) for host, *nums in RECAP.findall(proc.stdout)}


def batches(proc, play: str) -> list:
    """The hosts of each serial batch of `play`, in the order they ran (one PLAY header per batch)."""
    chunks = proc.stdout.split("PLAY [%s]" % play)[1:]
    return [sorted(set(HOST_LINE.findall(chunk.split("\nPLAY ")[0]))) for chunk in chunks]


@pytest.fixture
def make_lab(tmp_path):
    """make_lab(edges): a lab that is up; every lab made is torn down at the end, pass or fail."""
    made = []

    def make(edges: int = 1) -> Lab:
        lab = Lab(tmp_path, edges)
        made.append(lab)
        proc = lab.sh("up")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return lab

    try:
        yield make
    finally:
        for lab in made:
            lab.sh("down")


def test_check_xdp_support_reports_each_lab_host(netns, tmp_path):
    host_a, host_b = netns("pa"), netns("pb")
    host_a.veth("v0", "v1")
    host_b.bridge("br0")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "a ansible_connection=ebpf.fleet.netns ansible_netns=%s\nb ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % (host_a.name, host_b.name)
    )
    proc = run_playbook(CHECK, inventory=str(inventory))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_warning(proc)
    assert "v0: driver=veth" in proc.stdout and "native=yes" in proc.stdout
    assert "br0: driver=bridge" in proc.stdout
    # require native: the bridge-only host fails, naming the interface
    proc = run_playbook(CHECK, inventory=str(inventory), extra_vars={"xdp_check_require": "native"})
    assert proc.returncode != 0
    assert "br0" in proc.stdout


def test_check_xdp_support_takes_host_and_group_vars_over_its_defaults(netns, tmp_path):
    host_a, host_b = netns("pa"), netns("pb")
    host_a.veth("v0", "v1")
    host_b.bridge("br0")
    (tmp_path / "inventory.ini").write_text(
        "[veths]\na ansible_netns=%s xdp_check_interfaces='[\"v0\"]'\n"
        "[bridges]\nb ansible_netns=%s\n"
        "[all:vars]\nansible_connection=ebpf.fleet.netns\n" % (host_a.name, host_b.name)
    )
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "bridges.yml").write_text("xdp_check_require: native\n")
    proc = run_playbook(CHECK, inventory=str(tmp_path / "inventory.ini"))
    assert_no_warning(proc)
    counts = recap(proc)
    assert counts["a"][2] == 0 and counts["b"][2] == 1, proc.stdout  # b: its group's require=native
    assert "native XDP is required" in proc.stdout and "br0" in proc.stdout
    assert "v0: driver=veth" in proc.stdout
    assert "v1:" not in proc.stdout  # a: only its own interface list


DEPLOY_PLAY = "Deploy the network functions of each host's groups"
EDGES_ONLY = {"deploy_xdp_hosts": "edges"}  # the waves of the filter's hosts; the lab's other hosts wait


def test_deploy_xdp_rolls_out_in_the_waves_and_batches_the_inventory_sets(make_lab):
    lab = make_lab(3)
    # deploy_xdp_serial in group_vars/all splits each wave into batches of one; edge3 is in an earlier wave
    lab.vars_file("group_vars", "all", {"deploy_xdp_serial": 1})
    lab.vars_file("host_vars", "edge3", {"deploy_xdp_wave": 1})
    lab.vars_file("group_vars", "edges", {"deploy_xdp_wave": 2})
    first = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=EDGES_ONLY)
    assert first.returncode == 0, first.stdout + first.stderr
    assert_no_warning(first)
    assert batches(first, DEPLOY_PLAY) == [["edge3"], ["edge1"], ["edge2"]], first.stdout
    assert all(lab.xdp(host)["mode"] == 1 for host in ("edge1", "edge2", "edge3"))

    # waves only (group_vars/all gives everyone wave 5, edge2's host_vars wave 1): one batch per wave
    lab.vars_file("group_vars", "all", {"deploy_xdp_wave": 5})
    os.unlink(os.path.join(lab.dir, "group_vars", "edges.yml"))
    os.unlink(os.path.join(lab.dir, "host_vars", "edge3.yml"))
    lab.vars_file("host_vars", "edge2", {"deploy_xdp_wave": 1})
    second = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=EDGES_ONLY)
    assert second.returncode == 0, second.stdout + second.stderr
    assert_no_warning(second)
    assert batches(second, DEPLOY_PLAY) == [["edge2"], ["edge1", "edge3"]], second.stdout
    assert {host: counts[0] for host, counts in recap(second).items()} == {"edge1": 0, "edge2": 0, "edge3": 0}, second.stdout

    # a percentage from -e splits each wave; a bad wave number fails before anything runs, naming the host
    third = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=dict(EDGES_ONLY, deploy_xdp_serial="50%"))
    assert third.returncode == 0, third.stdout + third.stderr
    assert batches(third, DEPLOY_PLAY) == [["edge2"], ["edge1"], ["edge3"]], third.stdout
    lab.vars_file("host_vars", "edge2", {"deploy_xdp_wave": "first"})
    bad = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=EDGES_ONLY)
    assert bad.returncode != 0
    assert "edge2: deploy_xdp_wave \"first\" must be an integer" in bad.stdout, bad.stdout
    assert "PLAY [%s]" % DEPLOY_PLAY not in bad.stdout


def test_deploy_xdp_stops_the_rollout_when_a_batch_fails_more_than_max_fail_percentage(make_lab):
    lab = make_lab(3)
    # a canary batch of one, then the rest; the canary's declaration is wrong (a type its role refuses)
    lab.vars_file("group_vars", "all", {"deploy_xdp_serial": [1, "100%"]})
    lab.vars_file("host_vars", "edge1", {"xdp_filter_port_rules": "udp/53 drop"})
    proc = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=EDGES_ONLY)
    assert proc.returncode != 0
    assert_no_warning(proc)
    assert "xdp_filter_port_rules" in proc.stdout, proc.stdout
    assert batches(proc, DEPLOY_PLAY) == [["edge1"]], proc.stdout  # edge2 and edge3 never started
    assert all(lab.xdp(host) is None for host in ("edge1", "edge2", "edge3"))

    # 50 %: a batch of two where one fails is not above the threshold, so the next batch runs
    lab.vars_file("group_vars", "all", {"deploy_xdp_serial": 2, "deploy_xdp_max_fail_percentage": 50})
    proc = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=EDGES_ONLY)
    assert proc.returncode != 0  # edge1 still failed
    assert batches(proc, DEPLOY_PLAY) == [["edge1", "edge2"], ["edge3"]], proc.stdout
    assert lab.xdp("edge1") is None and lab.xdp("edge2")["mode"] == 1 and lab.xdp("edge3")["mode"] == 1


def test_deploy_xdp_tags_deploy_one_function_and_its_hosts_only(make_lab):
    lab = make_lab(1)
    proc = run_playbook(DEPLOY, inventory=lab.inventory, env={"ANSIBLE_RUN_TAGS": "xdp_lb,lb_backend"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_warning(proc)
    # the load balancer and its backends' VIPs; no filter on the edge, no egress program on the backends
    assert lab.xdp("lb1")["mode"] == 1 and lab.xdp("edge1") is None
    assert lab.info("lb1", query="keys(deployments)")["query_result"] == ["lb"]
    for host in ("edge1", "backend1", "backend2"):
        assert lab.info(host, query="keys(deployments)")["query_result"] == [], host
    assert (
        "203.0.113.10" in subprocess.run(["ip", "-n", lab.prefix + "backend1", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True).stdout
    )


def filter_state(lab, host) -> dict:
    """What the host's filter holds: program ids and version, the entries of its plain maps."""
    maps = ("filter_config", "filter_mgmt_v4", "filter_mgmt_ports")
    info = lab.info(
        host,
        contents=True,
        max_entries=100000,
        query="deployments.filter.{version: version, programs: programs, maps: maps.{%s}}" % ", ".join("%s: %s.entries" % (name, name) for name in maps),
    )
    return info["query_result"]


def holds_rule_sets(lab, host, policy) -> bool:
    """The swappable rule sets (filter_v4, filter_ports) hold exactly the policy's rules (bpf_map predicts no change)."""
    for name, entries in (
        ("filter_v4", v4_plugin.xdp_filter_v4_entries(policy["xdp_filter_v4_rules"])),
        ("filter_ports", port_plugin.xdp_filter_port_entries(policy["xdp_filter_port_rules"])),
    ):
        result = run_module(
            "bpf_map",
            {"name": "filter", "map": name, "mode": "sync", "entries": entries, "pin_root": lab.pin_root(host)},
            netns=lab.prefix + host,
            check_mode=True,
        )
        assert not result.failed, result
        if result.changed:
            return False
    return True


POLICY = dict(
    EDGES_ONLY,
    xdp_filter_default_verdict="drop",
    xdp_filter_v4_rules=[{"cidr": "192.0.2.0/24", "action": "drop", "rule_id": 1}],
    xdp_filter_port_rules=[{"proto": "udp", "port": 53, "action": "drop", "rule_id": 11}],
    xdp_filter_mgmt_v4=["198.51.100.0/28"],
)


def test_deploy_xdp_checks_the_whole_declaration_before_changing_a_deployed_host(make_lab):
    lab = make_lab()
    first = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=POLICY)
    assert first.returncode == 0, first.stdout + first.stderr
    assert_no_warning(first)
    before = filter_state(lab, "edge1")
    assert before["maps"]["filter_mgmt_v4"] and holds_rule_sets(lab, "edge1", POLICY)

    # a new, valid source rule and a port rule with a bad protocol: the source rule must not be swapped in
    bad_port = dict(
        POLICY,
        xdp_filter_v4_rules=POLICY["xdp_filter_v4_rules"] + [{"cidr": "203.0.113.0/24", "action": "drop", "rule_id": 2}],
        xdp_filter_port_rules=[{"proto": "tcpp", "port": 80, "action": "pass", "rule_id": 10}],
    )
    proc = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=bad_port)
    assert proc.returncode != 0
    assert_no_warning(proc)
    assert "proto" in proc.stdout and "tcpp" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert filter_state(lab, "edge1") == before and holds_rule_sets(lab, "edge1", POLICY)

    # a bad value only the map's BTF can refuse (checked against the deployed filter in check mode), with a new
    # source (a new program version would be the first write)
    bad_config = dict(POLICY, xdp_filter_v4_rules=bad_port["xdp_filter_v4_rules"], xdp_filter_config={"non_ip": "sometimes"}, xdp_filter_priority=11)
    proc = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=bad_config)
    assert proc.returncode != 0
    assert_no_warning(proc)
    assert "sometimes" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert filter_state(lab, "edge1") == before and holds_rule_sets(lab, "edge1", POLICY)
    assert recap(proc)["edge1"][0] == 0


def files_under(folder) -> list:
    """Every file (pins, records) under folder; empty folders are not counted."""
    return sorted(os.path.relpath(os.path.join(top, name), folder) for top, _dirs, names in os.walk(folder) for name in names)


def test_deploy_xdp_failed_first_deploy_leaves_nothing_behind(make_lab):
    lab = make_lab()
    # the rules are fine; filter_config's value is refused by the map (an enum value that does not exist), after
    # the program was attached and the management list and rules were written
    bad = dict(POLICY, xdp_filter_config={"non_ip": "sometimes"})
    proc = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=bad)
    assert proc.returncode != 0
    assert_no_warning(proc)
    assert lab.xdp("edge1") is None  # nothing attached
    assert files_under(lab.pin_root("edge1")) == []  # no pins
    assert not os.path.exists(os.path.join(lab.state_dir("edge1"), "filter"))  # no record
    assert [name for name in files_under(lab.state_dir("edge1")) if not name.endswith(".lock")] == []
    assert lab.info("edge1", query="keys(deployments)")["query_result"] == []
    out = proc.stdout
    assert "Declare the filter's maps" in out and "sometimes" in out, out  # the original error, re-raised
    assert "what this run made was removed" in out, out
    assert "Traceback" not in out + proc.stderr

    # the same host then deploys normally, and a re-run changes nothing
    good = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=POLICY)
    assert good.returncode == 0, good.stdout + good.stderr
    assert_no_warning(good)
    again = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=POLICY)
    assert recap(again)["edge1"][0] == 0, again.stdout
