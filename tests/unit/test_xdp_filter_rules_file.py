"""The xdp_filter role's plugins: IPv6 rules to both IPv6 maps, the management fail-safe, and the rules-file lookup
(a CIDR list file on the controller streamed into entry files for bpf_map)."""

import json
import os

import pytest
from ansible.errors import AnsibleError, AnsibleFilterError

from ansible_collections.ebpf.fleet.plugins.filter import xdp_filter_failsafe as failsafe_plugin
from ansible_collections.ebpf.fleet.plugins.filter import xdp_filter_v4_entries as v4_plugin
from ansible_collections.ebpf.fleet.plugins.filter import xdp_filter_v6_entries as v6_plugin
from ansible_collections.ebpf.fleet.plugins.lookup import xdp_filter_rules_file as lookup_plugin

v6_entries = v6_plugin.FilterModule().filters()["xdp_filter_v6_entries"]
failsafe = failsafe_plugin.FilterModule().filters()["xdp_filter_failsafe"]
v4_entries = v4_plugin.FilterModule().filters()["xdp_filter_v4_entries"]


def rule(action, rule_id=0, slot=0):
    return {"action": action, "rule_id": rule_id, "redirect_slot": slot}


# ---------------------------------------------------------------- xdp_filter_v6_entries


def test_v6_addresses_go_to_the_exact_hash_and_prefixes_to_the_trie():
    got = v6_entries(
        [
            {"cidr": "2001:db8:66::/48", "action": "drop", "rule_id": 7},
            {"cidr": "2001:db8:66::10", "action": "pass", "rule_id": 8},
            {"cidr": "2001:db8:77::1/128", "action": "redirect", "redirect_slot": 3},
        ]
    )
    assert got == {
        "filter_src_v6": [{"key": "2001:db8:66::10", "value": rule("pass", 8)}, {"key": "2001:db8:77::1", "value": rule("redirect", 0, 3)}],
        "filter_pfx_v6": [{"key": "2001:db8:66::/48", "value": rule("drop", 7)}],
    }
    assert v6_entries([]) == {"filter_src_v6": [], "filter_pfx_v6": []}


@pytest.mark.parametrize(
    "rules, message",
    [
        ([{"cidr": "2001:db8::1/32", "action": "drop"}], "rules[0].cidr '2001:db8::1/32': expected the network address, 2001:db8::/32"),
        ([{"cidr": "192.0.2.0/24", "action": "drop"}], "rules[0].cidr '192.0.2.0/24': expected an IPv6 address"),
        ([{"cidr": 6, "action": "drop"}], "rules[0].cidr 6: expected an IPv6 address"),
        ([{"cidr": "2001:db8::/32", "action": "deny"}], "rules[0].action 'deny': expected one of pass, drop, redirect"),
        ([{"cidr": "2001:db8::/32", "action": "drop", "rule_id": 5000}], "rules[0].rule_id 5000: expected an integer 0..4095"),
        (
            [{"cidr": "2001:db8::/32", "action": "drop"}, {"cidr": "2001:0db8::/32", "action": "pass"}],
            "rules[1].cidr '2001:0db8::/32': expected each CIDR once (also in rules[0])",
        ),
        ([{"cidr": "2001:db8::/32", "action": "drop", "prefix": 1}], "rules[0].prefix 1: expected no such field"),
    ],
)
def test_v6_bad_rules_name_the_field_the_value_and_what_was_expected(rules, message):
    with pytest.raises(AnsibleFilterError) as err:
        v6_entries(rules)
    assert message in str(err.value)


# ---------------------------------------------------------------- xdp_filter_failsafe

MGMT = {"mgmt_v4": ["198.51.100.1/32"], "mgmt_v6": ["2001:db8:1::/64"], "mgmt_ports": [22]}


def test_failsafe_passes_a_policy_that_keeps_the_management_ports_open():
    assert (
        failsafe(
            dict(
                MGMT,
                default_verdict="drop",
                v4_rules=[{"cidr": "203.0.113.0/24", "action": "drop"}, {"cidr": "198.51.100.0/24", "action": "pass"}],
                v6_rules=[{"cidr": "2001:db8:2::/48", "action": "drop"}],
                port_rules=[{"proto": "udp", "port": 22, "action": "drop"}, {"proto": "tcp", "port": 80, "action": "drop"}],
            )
        )
        == []
    )
    assert failsafe({}) == []  # default pass, nothing listed


@pytest.mark.parametrize(
    "policy, message",
    [
        ({"default_verdict": "drop"}, "xdp_filter_default_verdict is drop but xdp_filter_mgmt_v4 and xdp_filter_mgmt_v6 are empty"),
        ({"default_verdict": "drop", "mgmt_v4": ["198.51.100.1"], "mgmt_ports": []}, "xdp_filter_default_verdict is drop but xdp_filter_mgmt_ports is empty"),
        (
            dict(MGMT, v4_rules=[{"cidr": "203.0.113.0/24", "action": "drop"}, {"cidr": "198.51.100.0/24", "action": "drop", "rule_id": 3}]),
            "xdp_filter_v4_rules[1] {cidr: 198.51.100.0/24, action: drop, rule_id: 3} would drop the management source 198.51.100.1/32 (xdp_filter_mgmt_v4)",
        ),
        (
            dict(MGMT, v6_rules=[{"cidr": "2001:db8:1::5", "action": "redirect", "redirect_slot": 1}]),
            "xdp_filter_v6_rules[0] {cidr: 2001:db8:1::5, action: redirect, redirect_slot: 1} would redirect the management "
            "source 2001:db8:1::/64 (xdp_filter_mgmt_v6)",
        ),
        (
            dict(MGMT, port_rules=[{"proto": "tcp", "port": 22, "action": "drop", "rule_id": 4}]),
            "xdp_filter_port_rules[0] {proto: tcp, port: 22, action: drop, rule_id: 4} would drop the management port 22",
        ),
    ],
)
def test_failsafe_names_what_would_block_the_management_ports(policy, message):
    assert message in failsafe(policy)[0]


def test_failsafe_mgmt_match_any_needs_no_port_and_a_bad_management_source_is_named():
    assert failsafe({"default_verdict": "drop", "mgmt_v4": ["198.51.100.1/32"], "mgmt_ports": [], "mgmt_match": "any"}) == []
    with pytest.raises(AnsibleFilterError) as err:
        failsafe({"mgmt_v4": ["198.51.100.300"]})
    assert "xdp_filter_mgmt_v4[0] '198.51.100.300': expected an IPv4 or IPv6 address or CIDR" in str(err.value)


# ---------------------------------------------------------------- the xdp_filter_rules_file lookup


def run_lookup(tmp_path, text, **options):
    path = tmp_path / "rules.txt"
    path.write_text(text)
    return lookup_plugin.convert(str(path), dest=str(tmp_path / "out"), **options)


def load(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_v4_file_merged_with_inline_rules_gives_the_stride_table_of_the_v4_filter(tmp_path):
    text = "# deny list\n\n198.51.100.0/24 drop 7\n198.51.100.128/25   pass 8  # allowed half\n203.0.113.5\n"
    got = run_lookup(tmp_path, text, family="v4", rules=[{"cidr": "192.0.2.0/24", "action": "drop", "rule_id": 1}])
    assert got["rules"] == 4 and got["lockout"] == []
    want = v4_entries(
        [
            {"cidr": "198.51.100.0/24", "action": "drop", "rule_id": 7},
            {"cidr": "198.51.100.128/25", "action": "pass", "rule_id": 8},
            {"cidr": "203.0.113.5", "action": "drop"},
            {"cidr": "192.0.2.0/24", "action": "drop", "rule_id": 1},
        ]
    )
    assert load(got["maps"]["filter_v4"]) == want
    assert got["entries"] == {"filter_v4": len(want)}
    # the same input again: the same file, not written again
    mtime = os.stat(got["maps"]["filter_v4"]).st_mtime_ns
    again = run_lookup(tmp_path, text, family="v4", rules=[{"cidr": "192.0.2.0/24", "action": "drop", "rule_id": 1}])
    assert again["maps"] == got["maps"] and os.stat(got["maps"]["filter_v4"]).st_mtime_ns == mtime


def test_v6_file_gives_both_ipv6_maps_and_default_action_and_rule_id_apply(tmp_path):
    got = run_lookup(tmp_path, "2001:db8:66::/48\n2001:db8:66::10 pass 8\n", family="v6", action="pass", rule_id=3)
    assert load(got["maps"]["filter_src_v6"]) == [{"key": "2001:db8:66::10", "value": rule("pass", 8)}]
    assert load(got["maps"]["filter_pfx_v6"]) == [{"key": "2001:db8:66::/48", "value": rule("pass", 3)}]


def test_file_rules_dropping_a_management_source_are_listed(tmp_path):
    got = run_lookup(tmp_path, "198.51.100.0/24 drop 7\n203.0.113.0/24\n", family="v4", mgmt=["198.51.100.1/32"], name="xdp_filter_v4_rules_file")
    assert len(got["lockout"]) == 1
    assert "rules.txt line 1 198.51.100.0/24 drop 7 would drop the management source 198.51.100.1/32" in got["lockout"][0]


@pytest.mark.parametrize(
    "family, text, message",
    [
        ("v4", "198.51.100.0/24\n198.51.100.1/24\n", "line 2 '198.51.100.1/24': expected the network address, 198.51.100.0/24"),
        ("v4", "# x\n198.51.100.300\n", "line 2 '198.51.100.300': expected an IPv4 address or CIDR"),
        ("v4", "2001:db8::/32\n", "line 1 '2001:db8::/32': expected an IPv4 address"),
        ("v4", "198.51.100.0/24 deny\n", "line 1: action 'deny': expected one of pass, drop"),
        ("v4", "198.51.100.0/24 drop 9999\n", "line 1: rule_id '9999': expected an integer 0..4095"),
        ("v4", "198.51.100.0/24 drop 1 extra\n", "line 1 '198.51.100.0/24 drop 1 extra': expected CIDR [action] [rule_id]"),
        ("v4", "198.51.100.0/24\n\n198.51.100.0/24 pass\n", "line 3 '198.51.100.0/24': expected each CIDR once (also in"),
        ("v6", "2001:db8::1/32\n", "line 1 '2001:db8::1/32': expected the network address, 2001:db8::/32"),
    ],
)
def test_a_bad_line_fails_naming_the_file_the_line_and_what_was_expected(tmp_path, family, text, message):
    with pytest.raises(AnsibleError) as err:
        run_lookup(tmp_path, text, family=family)
    assert message in str(err.value) and "rules.txt" in str(err.value)


def test_a_cidr_in_the_file_and_inline_names_both_places(tmp_path):
    with pytest.raises(AnsibleError) as err:
        run_lookup(tmp_path, "192.0.2.0/24\n", family="v4", rules=[{"cidr": "192.0.2.0/24", "action": "pass"}])
    assert "line 1 '192.0.2.0/24': expected each CIDR once (also in xdp_filter_v4_rules[0].cidr)" in str(err.value)
