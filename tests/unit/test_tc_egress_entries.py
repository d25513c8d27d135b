"""tc_egress_entries turns egress classes and rules in the operator's notation into every map tc_egress reads."""

import ipaddress
import random

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ebpf.fleet.plugins.filter import tc_egress_entries as plugin
from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import tc_egress_tables

entries = plugin.FilterModule().filters()["tc_egress_entries"]

POLICY = {
    "default_class": "best_effort",
    "classes": [
        {"name": "best_effort"},
        {"name": "voice", "dscp": "ef", "priority": 6},
        {"name": "blocked", "action": "drop"},
        {"name": "bulk", "dscp": "af11", "limit": "drop", "rate_bps": 125000, "burst_bytes": 3000},
        {"name": "backup", "limit": "pace", "rate_bps": 1250000, "horizon_ns": 2000000},
    ],
    "rules": [
        {"cidr": "198.51.100.0/24", "class": "blocked"},
        {"cidr": "198.51.100.128/25", "class": "voice"},
        {"cidr": "203.0.113.7", "proto": "udp", "port": 5060, "class": "voice"},
        {"cidr": "2001:db8:dead::/48", "class": "blocked"},
        {"proto": "tcp", "port": 873, "class": "backup"},
        {"proto": "udp", "port": 873, "class": "bulk"},
        {"mark": "0x10", "class": "bulk"},
        {"mark": 0x10000, "class": "backup"},
    ],
}


def by_key(result, name):
    return {entry["key"]: entry["value"] for entry in result["maps"][name]}


def test_every_map_the_program_declares_is_in_the_output_even_empty():
    got = entries({})
    assert sorted(got["maps"]) == sorted(plugin.MAPS)
    assert got["maps"]["egress_config"] == [{"key": 0, "value": {"default_class": 0}}]
    # no class declared: an implicit pass class "default" at id 0
    assert got["classes"] == {"default": 0}
    assert by_key(got, "egress_classes")[0]["action"] == "pass" and by_key(got, "egress_classes")[0]["set_dscp"] == 0
    assert all(got["maps"][name] == [] for name in plugin.MAPS if name not in ("egress_config", "egress_classes"))


def test_classes_get_ids_in_order_and_their_values_carry_the_derived_rate_fields():
    got = entries(POLICY)
    assert got["classes"] == {"best_effort": 0, "voice": 1, "blocked": 2, "bulk": 3, "backup": 4}
    classes = by_key(got, "egress_classes")
    assert classes[1]["set_dscp"] == 1 and classes[1]["dscp"] == 46 and classes[1]["priority"] == 6
    assert classes[2]["action"] == "drop"
    assert classes[3]["dscp"] == 10 and classes[3] == tc_egress_tables.class_value(
        {"action": "pass", "limit": "drop", "set_dscp": 1, "dscp": 10, "priority": 0, "rate_bps": 125000, "burst_bytes": 3000, "horizon_ns": 0}
    )
    assert classes[3]["ns_per_byte"] == (10**9 << 32) // 125000 and classes[3]["derived_burst_bytes"] == 3000
    assert classes[4]["limit"] == "pace" and classes[4]["horizon_ns"] == 2000000
    assert got["maps"]["egress_config"] == [{"key": 0, "value": {"default_class": 0}}]


def test_default_class_named_default_is_added_whether_or_not_it_is_given():
    """The role passes tc_egress_default_class (default "default") always: naming "default" without declaring it
    is the same as not naming a default class."""
    classes = [{"name": "voice", "dscp": "ef"}]
    given, implied = entries({"classes": classes, "default_class": "default"}), entries({"classes": classes})
    assert given == implied and given["classes"] == {"default": 0, "voice": 1}
    declared = entries({"classes": classes + [{"name": "default", "dscp": "cs1"}], "default_class": "default"})
    assert declared["classes"] == {"voice": 1, "default": 0}
    assert by_key(declared, "egress_classes")[0]["dscp"] == 8


def test_explicit_ids_are_kept_and_the_default_class_named_elsewhere_is_configured():
    got = entries({"default_class": "normal", "classes": [{"name": "drop_all", "id": 0, "action": "drop"}, {"name": "normal", "id": 9}, {"name": "other"}]})
    assert got["classes"] == {"drop_all": 0, "normal": 9, "other": 1}
    assert got["maps"]["egress_config"] == [{"key": 0, "value": {"default_class": 9}}]


def test_marks_ports_and_ipv6_rules_point_at_their_class_ids():
    got = entries(POLICY)
    assert got["maps"]["egress_mark_classes"] == [{"key": 16, "value": {"class_id": 3, "set": 1}}]
    assert got["maps"]["egress_marks"] == [{"key": 65536, "value": {"class_id": 4}}]
    assert got["maps"]["egress_ports"] == [{"key": 873, "value": {"tcp": 4, "udp": 3, "set": ["tcp", "udp"]}}]
    assert got["maps"]["egress_dst_v6"] == [{"key": "2001:db8:dead::/48", "value": {"class_id": 2, "proto": 0, "port": 0}}]


def _walk(got, address):
    """tc_egress's IPv4 walk over the filter's output (tc_egress_tables.lookup_v4 on the entries)."""
    level16 = {k: (v.get("rule"), set(v["flags"])) for k, v in by_key(got, "egress_dst_v4_16").items()}
    level24 = {k: (v.get("rule"), set(v["flags"]), v["hosts"]) for k, v in by_key(got, "egress_dst_v4_24").items()}
    level32 = by_key(got, "egress_dst_v4_32")
    return tc_egress_tables.lookup_v4((level16, level24, level32), int(ipaddress.IPv4Address(address)))


def test_ipv4_rules_resolve_by_longest_prefix_as_the_program_walks_them():
    got = entries(POLICY)
    assert _walk(got, "198.51.100.5") == {"class_id": 2, "proto": 0, "port": 0}
    assert _walk(got, "198.51.100.200") == {"class_id": 1, "proto": 0, "port": 0}
    assert _walk(got, "203.0.113.7") == {"class_id": 1, "proto": "udp", "port": 5060}
    assert _walk(got, "203.0.113.8") is None
    assert _walk(got, "192.0.2.1") is None
    # the /24 above the /32 has its host bit set, so the program reads the /32 only for that address
    assert by_key(got, "egress_dst_v4_24")[int(ipaddress.IPv4Address("203.0.113.0"))]["hosts"] == [1 << 7, 0, 0, 0]


def test_random_ipv4_rule_sets_resolve_like_a_longest_prefix_match():
    rng = random.Random(9)
    for _round in range(20):
        rules, want = [], {}
        for n in range(30):
            length = rng.choice([8, 16, 20, 24, 28, 32])
            net = ipaddress.IPv4Network((rng.choice([0xC6336400, 0xCB007100, 0xC0000200]) | rng.getrandbits(8), length), strict=False)
            if str(net) in want:
                continue
            want[str(net)] = n % 3
            rules.append({"cidr": str(net), "class": "c%d" % (n % 3)})
        got = entries({"classes": [{"name": "c0"}, {"name": "c1"}, {"name": "c2"}], "rules": rules})
        for _probe in range(200):
            address = ipaddress.IPv4Address(rng.choice([0xC6336400, 0xCB007100, 0xC0000200]) | rng.getrandbits(8))
            matching = [ipaddress.IPv4Network(c) for c in want if address in ipaddress.IPv4Network(c)]
            found = _walk(got, str(address))
            if not matching:
                assert found is None
            else:
                best = max(matching, key=lambda net: net.prefixlen)
                assert found["class_id"] == got["classes"]["c%d" % want[str(best)]], (address, best)


@pytest.mark.parametrize(
    "policy, message",
    [
        ({"clases": []}, "input.clases []: expected no such field; valid fields: classes, rules, default_class (did you mean classes?)"),
        ({"classes": [{"name": "a", "dscp": 64}]}, "classes[0].dscp 64: expected an integer 0..63"),
        ({"classes": [{"name": "a", "dscp": "expedited"}]}, "classes[0].dscp 'expedited': expected an integer 0..63 or a name"),
        ({"classes": [{"name": "a", "rate": 5}]}, "classes[0].rate 5: expected no such field"),
        (
            {"classes": [{"name": "a", "limit": "drop", "burst_bytes": 1500}]},
            "classes[0].rate_bps None: expected an integer 1..18446744073709551615 (the field is required)",
        ),
        ({"classes": [{"name": "a", "limit": "drop", "rate_bps": 1000}]}, "classes[0].burst_bytes None: expected"),
        ({"classes": [{"name": "a", "rate_bps": 1000}]}, "classes[0].rate_bps 1000: expected no rate_bps unless limit"),
        ({"classes": [{"name": "a", "action": "drop", "dscp": 46}]}, "classes[0].dscp 46: expected nothing but the action"),
        ({"classes": [{"name": "a", "action": "reject"}]}, "classes[0].action 'reject': expected one of pass, drop"),
        ({"classes": [{"name": "a"}, {"name": "a"}]}, "classes[1].name 'a': expected each class name once (also in classes[0])"),
        ({"classes": [{"name": "a", "id": 3}, {"name": "b", "id": 3}]}, "classes[1].id 3: expected an id no other class"),
        ({"classes": [{"name": "a", "id": 64}]}, "classes[0].id 64: expected an integer 0..63"),
        ({"classes": [{"name": "c%d" % n} for n in range(64)]}, "classes[63].name 'c63': expected at most 64 classes"),
        ({"default_class": "gold"}, "input.default_class 'gold': expected the name of a declared class"),
        (
            {"rules": [{"cidr": "198.51.100.1/24", "class": "default"}]},
            "rules[0].cidr '198.51.100.1/24': expected the network address, 198.51.100.0/24 (host bits are set)",
        ),
        (
            {"rules": [{"cidr": "198.51.100.0/24", "class": "Default"}]},
            "rules[0].class 'Default': expected the name of a declared class (default) (did you mean default?)",
        ),
        ({"rules": [{"cidr": "198.51.100.0/24", "class": "default", "port": 53}]}, "rules[0].port 53: expected no port unless proto is tcp or udp"),
        ({"rules": [{"cidr": "2001:db8::/32", "proto": "icmp", "class": "default"}]}, "rules[0].proto 'icmp': expected icmp"),
        ({"rules": [{"mark": 0, "class": "default"}]}, "rules[0].mark 0: expected an integer 1..4294967295"),
        ({"rules": [{"mark": 5, "port": 80, "class": "default"}]}, "rules[0].port 80: expected no port in a mark rule"),
        ({"rules": [{"port": 80, "class": "default"}]}, "rules[0].proto None: expected tcp or udp in a port rule"),
        ({"rules": [{"proto": "tcp", "port": 70000, "class": "default"}]}, "rules[0].port 70000: expected an integer 1..65535"),
        (
            {"rules": [{"proto": "tcp", "port": 80, "class": "default"}, {"proto": "tcp", "port": 80, "class": "default"}]},
            "rules[1].port 80: expected one rule per protocol and port (also in rules[0])",
        ),
        (
            {"rules": [{"cidr": "192.0.2.0/24", "class": "default"}, {"cidr": "192.0.2.0/24", "proto": "tcp", "class": "default"}]},
            "rules[1].cidr '192.0.2.0/24': expected one rule per network (also in rules[0])",
        ),
        ({"rules": [{"cidr": "192.0.2.0/24", "clas": "default"}]}, "rules[0].clas 'default': expected no such field"),
        (["not", "a", "dict"], "input ['not', 'a', 'dict']: expected a dict {classes: [...]"),
    ],
)
def test_bad_input_names_the_field_the_value_and_what_was_expected(policy, message):
    with pytest.raises(AnsibleFilterError) as err:
        entries(policy)
    assert message in str(err.value), str(err.value)


def test_the_filter_is_reachable_through_its_fqcn_module():
    # ansible loads plugins/filter/tc_egress_entries.py and takes the filter of that name
    assert "tc_egress_entries" in plugin.FilterModule().filters()
    for section in (plugin.DOCUMENTATION, plugin.EXAMPLES, plugin.RETURN):
        assert section.strip()
