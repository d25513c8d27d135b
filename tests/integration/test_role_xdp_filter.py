"""Role ebpf.fleet.xdp_filter through ansible-playbook on lab hosts (network namespaces): the filter deployed with
real traffic through it (a pass and a drop), re-run changed=0, check mode changing nothing on a fresh and on a
deployed host, absent leaving no pin or record, the argument spec's message for a wrong type, the fail-safe
refusing a policy that would block the management ports, an IPv6 rule, a million-line rules file, the
controller's address in the management list; no warning anywhere."""

import json
import os
import re
import time

import pytest
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
            "ebpf_fleet_state_dir=%s\n" % (self.ns.name, pin_root, self.state_dir)
        )
        (tmp_path / "play.yml").write_text(PLAYBOOK)

    def play(self, check=False, env=None, **variables):
        extra = {"xdp_filter_interfaces": ["lab0"], "xdp_filter_rules_file_dir": self.cache}
        extra.update(variables)
        proc = run_playbook(str(self.tmp / "play.yml"), inventory=str(self.tmp / "inventory.ini"), extra_vars=extra, check=check, diff=check, env=env)
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
            found[root] = sorted(
                os.path.relpath(os.path.join(top, name), root) for top, _dirs, names in os.walk(root) for name in names if not name.endswith(".lock")
            )
        return found

    def maps(self, *names, max_entries=100) -> dict:
        query = "deployments.filter.maps.{%s}" % ", ".join("%s: %s.entries" % (name, name) for name in names)
        info = run_module(
            "bpf_info", {"pin_root": self.pin_root, "state_dir": self.state_dir, "contents": True, "max_entries": max_entries, "query": query}, netns=self.ns
        )
        assert not info.failed, info
        return info["query_result"]

    def holds(self, name, entries) -> bool:
        """The map (for a rule set: its inner map) holds exactly these entries (bpf_map in check mode predicts
        no change; bpf_info shows a map of maps' slot, not the rules)."""
        result = run_module(
            "bpf_map", {"name": "filter", "map": name, "mode": "sync", "entries": entries, "pin_root": self.pin_root}, netns=self.ns, check_mode=True
        )
        assert not result.failed, result
        return not result.changed

    def stats(self) -> dict:
        entries = self.maps("filter_stats")["filter_stats"]
        return {(e["key"]["reason"], e["key"]["verdict"]): e["value"]["packets"] for e in entries if e["value"]["packets"]}

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


def test_wrong_variable_type_fails_with_the_argument_spec_message_and_changes_nothing(edge):
    proc = edge.play(xdp_filter_allow_lockout="sometimes")
    assert proc.returncode != 0
    assert "Validation of arguments failed" in proc.stdout, proc.stdout
    assert "argument 'xdp_filter_allow_lockout' is of type str" in proc.stdout, proc.stdout
    assert edge.xdp() is None


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"xdp_filter_default_verdict": "drop"}, "xdp_filter_default_verdict is drop but xdp_filter_mgmt_v4 and xdp_filter_mgmt_v6 are empty"),
        (
            {"xdp_filter_mgmt_v4": ["198.51.100.1/32"], "xdp_filter_v4_rules": [{"cidr": "198.51.100.0/24", "action": "drop", "rule_id": 3}]},
            "xdp_filter_v4_rules[0] {cidr: 198.51.100.0/24, action: drop, rule_id: 3} would drop the management source 198.51.100.1/32 (xdp_filter_mgmt_v4)",
        ),
        (
            {"xdp_filter_mgmt_v4": ["198.51.100.1/32"], "xdp_filter_port_rules": [{"proto": "tcp", "port": 22, "action": "drop", "rule_id": 4}]},
            "xdp_filter_port_rules[0] {proto: tcp, port: 22, action: drop, rule_id: 4} would drop the management port 22",
        ),
    ],
)
def test_the_failsafe_refuses_a_policy_that_would_block_the_management_ports_before_anything_is_applied(edge, variables, message):
    proc = edge.play(**variables)
    assert proc.returncode != 0
    out = " ".join(proc.stdout.split())
    assert "refused before anything was applied" in out and message in out, proc.stdout
    assert "xdp_filter_allow_lockout=true" in out
    assert edge.xdp() is None
    assert edge.files()[edge.pin_root] == []
    # the override: the same policy passes the fail-safe (check mode: predicted, nothing applied)
    check = edge.play(check=True, xdp_filter_allow_lockout=True, **variables)
    assert check.returncode == 0 and edge.changed(check) > 0, check.stdout
    assert edge.xdp() is None


def test_a_failed_first_deploy_leaves_nothing_behind(edge):
    # filter_config's value is refused by the map's BTF after the program was attached and the rules written
    proc = edge.play(xdp_filter_config={"non_ip": "sometimes"}, **POLICY)
    assert proc.returncode != 0
    out = proc.stdout
    assert "Declare the filter's maps" in out and "sometimes" in out, out
    assert "what this run made was removed" in out, out
    assert edge.xdp() is None
    assert edge.files() == {edge.pin_root: [], edge.state_dir: []}, edge.files()


def test_controller_address_joins_the_management_list_and_ipv6_rules_fill_both_ipv6_maps(edge, tmp_path):
    # The netns connection has no SSH session: the test fakes the host's SSH_CONNECTION line as the role's internal
    # variable (what `printenv SSH_CONNECTION` returns on an SSH host); its first field is the controller.
    fake_ssh = "%s 40022 %s 22" % (CLIENT, EDGE)
    rules6 = [{"cidr": "2001:db8:66::/48", "action": "drop", "rule_id": 5}, {"cidr": "2001:db8:77::1", "action": "pass", "rule_id": 6}]
    first = edge.play(
        xdp_filter_default_verdict="drop",
        xdp_filter_v6_rules=rules6,
        xdp_filter_port_rules=[{"proto": "udp", "port": 5000, "action": "pass"}],
        xdp_filter__ssh_connection=fake_ssh,
    )
    assert first.returncode == 0, first.stdout
    maps = edge.maps("filter_mgmt_v4", "filter_mgmt_v6")
    assert [e["key"] for e in maps["filter_mgmt_v4"]] == [CLIENT + "/32"]
    assert maps["filter_mgmt_v6"] == []
    assert edge.holds("filter_src_v6", [{"key": "2001:db8:77::1", "value": {"action": "pass", "rule_id": 6}}])
    assert edge.holds("filter_pfx_v6", [{"key": "2001:db8:66::/48", "value": {"action": "drop", "rule_id": 5}}])
    # default deny: the port rule's UDP/5000 passes, UDP/5001 is dropped
    assert edge.udp(5000) > 0 and edge.udp(5001) == 0

    # the address from the inventory (IPv6) instead; IPv6 rules from a file merged with the inline ones
    rules_file = tmp_path / "deny_v6.txt"
    rules_file.write_text("# IPv6 sources\n\n2001:db8:88::/64 drop 7   # a comment\n2001:db8:99::5\n")
    second = edge.play(
        xdp_filter_default_verdict="drop",
        xdp_filter_v6_rules=rules6,
        xdp_filter_v6_rules_file=str(rules_file),
        xdp_filter_controller_address=CLIENT6,
        xdp_filter__ssh_connection=fake_ssh,
    )
    assert second.returncode == 0, second.stdout
    maps = edge.maps("filter_mgmt_v4", "filter_mgmt_v6")
    assert maps["filter_mgmt_v4"] == [] and [e["key"] for e in maps["filter_mgmt_v6"]] == [CLIENT6 + "/128"]
    assert edge.holds(
        "filter_src_v6", [{"key": "2001:db8:77::1", "value": {"action": "pass", "rule_id": 6}}, {"key": "2001:db8:99::5", "value": {"action": "drop"}}]
    )
    assert edge.holds(
        "filter_pfx_v6",
        [{"key": "2001:db8:66::/48", "value": {"action": "drop", "rule_id": 5}}, {"key": "2001:db8:88::/64", "value": {"action": "drop", "rule_id": 7}}],
    )
    again = edge.play(
        xdp_filter_default_verdict="drop",
        xdp_filter_v6_rules=rules6,
        xdp_filter_v6_rules_file=str(rules_file),
        xdp_filter_controller_address=CLIENT6,
        xdp_filter__ssh_connection=fake_ssh,
    )
    assert again.returncode == 0 and edge.changed(again) == 0, again.stdout

    # switched off: nothing is added
    off = edge.play(xdp_filter_mgmt_include_controller=False, xdp_filter_mgmt_v4=["198.51.100.1/32"], xdp_filter__ssh_connection=fake_ssh)
    assert off.returncode == 0, off.stdout
    assert [e["key"] for e in edge.maps("filter_mgmt_v4")["filter_mgmt_v4"]] == ["198.51.100.1/32"]


def test_a_million_line_rules_file_is_deployed_and_a_rerun_changes_nothing(edge, tmp_path):
    # 1,000,000 /32 sources spread over 10.0.0.0/8 (a map test without traffic may use any addresses): every 16th
    # address, with actions and rule ids on some lines, comments and blank lines between
    rules_file = tmp_path / "deny_v4.txt"
    with open(rules_file, "w", encoding="utf-8") as handle:
        for i in range(1000000):
            addr = (10 << 24) + i * 16
            text = "%d.%d.%d.%d" % (addr >> 24, (addr >> 16) & 255, (addr >> 8) & 255, addr & 255)
            if i % 1000 == 0:
                handle.write("%s/32 pass 9\n" % text)
            elif i % 100000 == 1:
                handle.write("# block %d\n\n%s\n" % (i, text))
            else:
                handle.write(text + "\n")
    started = time.monotonic()
    first = edge.play(xdp_filter_v4_rules_file=str(rules_file), xdp_filter_v4_rules=[{"cidr": "192.0.2.0/24", "action": "drop", "rule_id": 1}])
    first_s = time.monotonic() - started
    assert first.returncode == 0, first.stdout
    started = time.monotonic()
    second = edge.play(xdp_filter_v4_rules_file=str(rules_file), xdp_filter_v4_rules=[{"cidr": "192.0.2.0/24", "action": "drop", "rule_id": 1}])
    second_s = time.monotonic() - started
    assert second.returncode == 0 and edge.changed(second) == 0, second.stdout
    print("\n1M-line rules file: first deploy %.1f s, re-run (changed=0) %.1f s" % (first_s, second_s))
    # the table holds them: a merge of a few of its entries changes nothing
    probe = run_module(
        "bpf_map",
        {
            "name": "filter",
            "map": "filter_v4",
            "mode": "merge",
            "pin_root": edge.pin_root,
            "entries": [
                {"key": "10.0.0.16/32", "value": {"rule": {"action": "drop"}, "flags": ["match"]}},
                {"key": "10.0.0.0/32", "value": {"rule": {"action": "pass", "rule_id": 9}, "flags": ["match"]}},
                {"key": "192.0.2.0/24", "value": {"rule": {"action": "drop", "rule_id": 1}, "flags": ["match"]}},
            ],
        },
        netns=edge.ns,
        check_mode=True,
    )
    assert not probe.failed and not probe.changed, probe
    # 1M /32s, the 62500 /24 blocks and 245 /16 blocks above them, 192.0.2.0/24 and its /16
    assert probe["counts"]["before"] == 1000000 + 62500 + 245 + 2, probe["counts"]
