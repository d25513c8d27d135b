"""Role ebpf.fleet.xdp_filter through ansible-playbook on lab hosts (network namespaces): the filter deployed with
real traffic through it (a pass and a drop), re-run changed=0, check mode changing nothing on a fresh and on a
deployed host, absent leaving no pin or record, the argument spec's message for a wrong type, the fail-safe
refusing a policy that would block the management ports, an IPv6 rule, a million-line rules file, the
controller's address in the management list; no warning anywhere."""

import json
import os
import random
import re
import subprocess
import time

import pytest

from harness import paths
from harness.runner import run_module, run_playbook
from harness.traffic import udp_count

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", re.M)
EDGE, CLIENT, DENIED = "198.51.100.11", "198.51.100.33", "198.51.100.66"
EDGE6, CLIENT6 = "2001:db8:100::11", "2001:db8:100::33"

PLAYBOOK = """
- name: XDP filter
  hosts: edges
  gather_facts: false
  roles:
    - role: ebpf.fleet.xdp_filter
"""


class Edge:
    """One lab host (a namespace with lab0) and a client namespace on the other end of the veth."""

    def __init__(self, netns, pin_root, tmp_path):
        self.ns = netns("xfe")
        self.client = netns("xfc")
        self.ns.veth("lab0", "cl0", peer_ns=self.client, addr_a=EDGE + "/24", addr_b=CLIENT + "/24")
        self.client.ip("addr", "add", DENIED + "/24", "dev", "cl0")
        self.client.ip("-6", "addr", "add", CLIENT6 + "/64", "dev", "cl0", "nodad")
        self.ns.ip("-6", "addr", "add", EDGE6 + "/64", "dev", "lab0", "nodad")
        self.pin_root = pin_root
        self.state_dir = str(tmp_path / "state")
        self.cache = str(tmp_path / "cache")
        self.tmp = tmp_path
        (tmp_path / "inventory.ini").write_text(
            "[edges]\nedge1 ansible_connection=ebpf.fleet.netns ansible_netns=%s ebpf_fleet_pin_root=%s "
            "ebpf_fleet_state_dir=%s\n" % (self.ns.name, pin_root, self.state_dir))
        (tmp_path / "play.yml").write_text(PLAYBOOK)

    def play(self, check=False, env=None, **variables):
        extra = {"xdp_filter_interfaces": ["lab0"], "xdp_filter_rules_file_dir": self.cache}
        extra.update(variables)
        proc = run_playbook(str(self.tmp / "play.yml"), inventory=str(self.tmp / "inventory.ini"), extra_vars=extra,
                            check=check, diff=check, env=env)
        out = proc.stdout + proc.stderr
        assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out
        assert "Traceback" not in out, out
        return proc

    @staticmethod
    def changed(proc) -> int:
        return int(dict(RECAP.findall(proc.stdout))["edge1"])

    def xdp(self):
        link = json.loads(self.ns.ip("-j", "-d", "link", "show", "lab0").stdout)[0]
        return link.get("xdp")

    def files(self) -> dict:
        """Every pin and record file the host holds (lock files aside)."""
        found = {}
        for root in (self.pin_root, self.state_dir):
            found[root] = sorted(os.path.relpath(os.path.join(top, name), root)
                                 for top, _dirs, names in os.walk(root) for name in names if not name.endswith(".lock"))
        return found

    def maps(self, *names, max_entries=100) -> dict:
        query = "deployments.filter.maps.{%s}" % ", ".join("%s: %s.entries" % (name, name) for name in names)
        info = run_module("bpf_info", {"pin_root": self.pin_root, "state_dir": self.state_dir, "contents": True,
                                       "max_entries": max_entries, "query": query}, netns=self.ns)
        assert not info.failed, info
        return info["query_result"]

    def stats(self) -> dict:
        entries = self.maps("filter_stats")["filter_stats"]
        return {(e["key"]["reason"], e["key"]["verdict"]): e["value"]["packets"] for e in entries
                if e["value"]["packets"]}

    def udp(self, port, src=None, count=20) -> int:
        """Datagrams from the client (from src, when given) to the edge's UDP port that arrived."""
        if src:
            self.client.ip("route", "replace", EDGE + "/32", "dev", "cl0", "src", src)
        try:
            _sent, received = udp_count(self.client, self.ns, EDGE, port, duration=0.3)
        finally:
            if src:
                self.client.ip("route", "del", EDGE + "/32", "dev", "cl0")
        return received


@pytest.fixture
def edge(netns, pin_root, tmp_path):
    return Edge(netns, pin_root, tmp_path)


POLICY = {
    "xdp_filter_default_verdict": "pass",
    "xdp_filter_v4_rules": [{"cidr": DENIED, "action": "drop", "rule_id": 1}],
    "xdp_filter_port_rules": [{"proto": "udp", "port": 5353, "action": "drop", "rule_id": 11}],
    "xdp_filter_mgmt_v4": ["198.51.100.1/32"],
}


def test_present_filters_traffic_rerun_changes_nothing_check_mode_changes_nothing_and_absent_leaves_nothing(edge):
    # check mode on a fresh host predicts and changes nothing
    check = edge.play(check=True, **POLICY)
    assert check.returncode == 0, check.stdout
    assert edge.changed(check) > 0
    assert edge.xdp() is None
    assert edge.files() == {edge.pin_root: [], edge.state_dir: []} or not os.path.exists(edge.state_dir)

    first = edge.play(**POLICY)
    assert first.returncode == 0, first.stdout
    assert edge.changed(first) > 0
    assert edge.xdp()["mode"] == 1  # native XDP on the veth
    # traffic: UDP/5000 from the client passes, UDP/5353 is dropped by its port rule, the denied source is dropped
    assert edge.udp(5000) > 0
    assert edge.udp(5353) == 0
    assert edge.udp(5000, src=DENIED) == 0
    stats = edge.stats()
    assert stats[("default", "pass")] > 0 and stats[("port", "drop")] > 0 and stats[("source", "drop")] > 0, stats

    second = edge.play(**POLICY)
    assert second.returncode == 0 and edge.changed(second) == 0, second.stdout
    check = edge.play(check=True, **POLICY)
    assert check.returncode == 0 and edge.changed(check) == 0, check.stdout
    # check mode with a change on a deployed host: predicted, not applied
    changed_policy = dict(POLICY, xdp_filter_port_rules=[])
    check = edge.play(check=True, **changed_policy)
    assert check.returncode == 0 and edge.changed(check) > 0, check.stdout
    assert edge.udp(5353) == 0

    check = edge.play(check=True, xdp_filter_state="absent")
    assert check.returncode == 0 and edge.changed(check) > 0, check.stdout
    assert edge.xdp() is not None
    gone = edge.play(xdp_filter_state="absent")
    assert gone.returncode == 0 and edge.changed(gone) > 0, gone.stdout
    assert edge.xdp() is None
    assert edge.files() == {edge.pin_root: [], edge.state_dir: []}, edge.files()
    again = edge.play(xdp_filter_state="absent")
    assert again.returncode == 0 and edge.changed(again) == 0, again.stdout
