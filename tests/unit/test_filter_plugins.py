"""The Jinja filters turn operator declarations into bpf_map entries through module_utils, and name bad input."""

import json
import os
import subprocess

import pytest
from ansible.errors import AnsibleFilterError
from harness import paths

from ansible_collections.ebpf.fleet.plugins.filter import maglev_entries as maglev_plugin
from ansible_collections.ebpf.fleet.plugins.filter import xdp_filter_port_entries as port_plugin
from ansible_collections.ebpf.fleet.plugins.filter import xdp_filter_v4_entries as v4_plugin
from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import xdp_filter_tables, xdp_lb_entries

v4_entries = v4_plugin.FilterModule().filters()["xdp_filter_v4_entries"]
port_entries = port_plugin.FilterModule().filters()["xdp_filter_port_entries"]
lb_tables = maglev_plugin.FilterModule().filters()["maglev_entries"]

DROP7 = {"action": "drop", "rule_id": 7, "redirect_slot": 0}
PASS8 = {"action": "pass", "rule_id": 8, "redirect_slot": 0}


# ---------------------------------------------------------------- xdp_filter_v4_entries


def test_v4_rules_become_the_stride_table_of_filter_tables():
    rules = [{"cidr": "0.0.0.0/0", "action": "drop", "rule_id": 7}, {"cidr": "198.51.100.3", "action": "pass", "rule_id": 8}]
    got = v4_entries(rules)
    want = xdp_filter_tables.expand_v4({"0.0.0.0/0": DROP7, "198.51.100.3/32": PASS8})
    for entry in want:
        if entry["value"]["rule"] is None:
            del entry["value"]["rule"]
    assert got == want
    by_key = {entry["key"]: entry["value"] for entry in got}
    assert len([key for key in by_key if key.endswith("/16")]) == 65536
    assert by_key["198.51.0.0/16"] == {"rule": DROP7, "flags": ["deeper", "hosts", "match"]}
    # the /24 only leads to the /32: no rule of its own (bpf_map writes the missing member as zero)
    assert by_key["198.51.100.0/24"] == {"flags": ["deeper"]}
    assert by_key["198.51.100.3/32"] == {"rule": PASS8, "flags": ["match"]}


def test_v4_redirect_rule_keeps_its_slot_and_an_empty_list_is_an_empty_table():
    got = v4_entries([{"cidr": "192.0.2.0/24", "action": "redirect", "rule_id": 3, "redirect_slot": 5}])
    redirect = {"action": "redirect", "rule_id": 3, "redirect_slot": 5}
    assert got == [
        {"key": "192.0.0.0/16", "value": {"flags": ["blocks", "deeper"]}},
        {"key": "192.0.2.0/24", "value": {"rule": redirect, "flags": ["match"]}},
    ]
    assert v4_entries([]) == []


def test_a_rule_with_a_mark_carries_it_and_a_rule_without_one_has_no_mark_member():
    """The mark (for the XDP -> TC handoff) is in the rule only when given: rules without one stay as they were
    (bpf_map writes the missing member as 0, which the filter reads as no mark)."""
    got = v4_entries(
        [
            {"cidr": "192.0.2.0/24", "action": "pass", "rule_id": 3, "mark": "0x10"},
            {"cidr": "198.51.100.0/24", "action": "redirect", "redirect_slot": 1, "mark": 65536},
            {"cidr": "203.0.113.0/24", "action": "drop"},
        ]
    )
    by_key = {entry["key"]: entry["value"] for entry in got}
    assert by_key["192.0.2.0/24"]["rule"] == {"action": "pass", "rule_id": 3, "redirect_slot": 0, "mark": 16}
    assert by_key["198.51.100.0/24"]["rule"] == {"action": "redirect", "rule_id": 0, "redirect_slot": 1, "mark": 65536}
    assert by_key["203.0.113.0/24"]["rule"] == {"action": "drop", "rule_id": 0, "redirect_slot": 0}
    ports = port_entries([{"proto": "udp", "port": 5004, "action": "pass", "mark": 32}, {"proto": "tcp", "port": 5004, "action": "pass"}])
    assert ports == [
        {
            "key": 5004,
            "value": {
                "udp": {"action": "pass", "rule_id": 0, "redirect_slot": 0, "mark": 32},
                "tcp": {"action": "pass", "rule_id": 0, "redirect_slot": 0},
                "set": ["tcp", "udp"],
            },
        }
    ]


@pytest.mark.parametrize(
    "plugin, rule, message",
    [
        (
            "v4",
            {"cidr": "192.0.2.0/24", "action": "drop", "mark": 16},
            "rules[0].mark 16: expected no mark on a drop rule (a dropped packet reaches no TC hook)",
        ),
        (
            "v4",
            {"cidr": "192.0.2.0/24", "action": "pass", "mark": 0},
            "rules[0].mark 0: expected an integer 1..4294967295 or a string such as '0x10' (0 is no mark)",
        ),
        ("port", {"proto": "udp", "port": 53, "action": "pass", "mark": "0x1g"}, "rules[0].mark '0x1g': expected an integer"),
        ("port", {"proto": "udp", "port": 53, "action": "pass", "mark": 1 << 32}, "rules[0].mark 4294967296: expected"),
        ("port", {"proto": "udp", "port": 53, "action": "pass", "mark": True}, "rules[0].mark True: expected an integer"),
    ],
)
def test_a_bad_mark_is_refused_naming_rule_value_and_expected(plugin, rule, message):
    with pytest.raises(AnsibleFilterError) as err:
        (v4_entries if plugin == "v4" else port_entries)([rule])
    assert message in str(err.value)


@pytest.mark.parametrize(
    "rules, message",
    [
        ([{"cidr": "192.0.2.1/24", "action": "drop"}], "rules[0].cidr '192.0.2.1/24': expected the network address, 192.0.2.0/24"),
        ([{"cidr": "192.0.2.300", "action": "drop"}], "rules[0].cidr '192.0.2.300': expected an IPv4 address or CIDR"),
        ([{"cidr": "2001:db8::/32", "action": "drop"}], "rules[0].cidr '2001:db8::/32': expected an IPv4 address"),
        ([{"cidr": 10, "action": "drop"}], "rules[0].cidr 10: expected an IPv4 address"),
        ([{"action": "drop"}], "rules[0].cidr None: expected an IPv4 address"),
        ([{"cidr": "192.0.2.0/24", "action": "deny"}], "rules[0].action 'deny': expected one of pass, drop, redirect"),
        ([{"cidr": "192.0.2.0/24", "action": "drop", "rule_id": 4096}], "rules[0].rule_id 4096: expected an integer 0..4095"),
        ([{"cidr": "192.0.2.0/24", "action": "drop", "rule_id": True}], "rules[0].rule_id True: expected an integer"),
        ([{"cidr": "192.0.2.0/24", "action": "drop", "redirect_slot": 2}], "rules[0].redirect_slot 2: expected no slot unless action is redirect"),
        ([{"cidr": "192.0.2.0/24", "action": "redirect", "redirect_slot": 64}], "rules[0].redirect_slot 64: expected an integer 0..63"),
        ([{"cidr": "192.0.2.0/24", "action": "drop", "ruleid": 1}], "rules[0].ruleid 1: expected no such field; valid fields: cidr,"),
        (
            [{"cidr": "192.0.2.0/24", "action": "drop"}, {"cidr": " 192.0.2.0/24", "action": "pass"}],
            "rules[1].cidr ' 192.0.2.0/24': expected each CIDR once (also in rules[0])",
        ),
        (["192.0.2.0/24"], "input[0] '192.0.2.0/24': expected a dict"),
        ("192.0.2.0/24", "input '192.0.2.0/24': expected a list of IPv4 source rules"),
    ],
)
def test_v4_bad_rules_name_the_field_the_value_and_what_was_expected(rules, message):
    with pytest.raises(AnsibleFilterError) as err:
        v4_entries(rules)
    assert message in str(err.value)


def test_v4_rule_id_from_a_string_of_digits_is_accepted():
    assert v4_entries([{"cidr": "192.0.2.0/24", "action": "drop", "rule_id": "7"}])[-1]["value"]["rule"] == DROP7


# ---------------------------------------------------------------- xdp_filter_port_entries


def test_port_rules_group_protocols_of_one_port_into_one_element():
    got = port_entries(
        [
            {"proto": "tcp", "port": 80, "action": "pass", "rule_id": 10},
            {"proto": "udp", "port": 53, "action": "drop", "rule_id": 11},
            {"proto": "tcp", "port": 53, "action": "pass", "rule_id": 12},
            {"proto": "icmp", "port": 8, "action": "drop", "rule_id": 13},
        ]
    )
    assert got == [
        {"key": 8, "value": {"icmp": {"action": "drop", "rule_id": 13, "redirect_slot": 0}, "set": ["icmp"]}},
        {
            "key": 53,
            "value": {
                "udp": {"action": "drop", "rule_id": 11, "redirect_slot": 0},
                "tcp": {"action": "pass", "rule_id": 12, "redirect_slot": 0},
                "set": ["tcp", "udp"],
            },
        },
        {"key": 80, "value": {"tcp": {"action": "pass", "rule_id": 10, "redirect_slot": 0}, "set": ["tcp"]}},
    ]


@pytest.mark.parametrize(
    "rules, message",
    [
        ([{"proto": "sctp", "port": 80, "action": "pass"}], "rules[0].proto 'sctp': expected one of tcp, udp, icmp, icmpv6"),
        ([{"proto": "tcp", "port": 70000, "action": "pass"}], "rules[0].port 70000: expected an integer 0..65535"),
        ([{"proto": "icmp", "port": 300, "action": "drop"}], "rules[0].port 300: expected an integer 0..255"),
        ([{"proto": "tcp", "action": "pass"}], "rules[0].port None: expected an integer 0..65535 (the field is required)"),
        ([{"proto": "tcp", "port": 80, "action": "allow"}], "rules[0].action 'allow': expected one of pass, drop, redirect"),
        (
            [{"proto": "tcp", "port": 80, "action": "pass"}, {"proto": "tcp", "port": "80", "action": "drop"}],
            "rules[1].port 80: expected one rule per tcp port (also in rules[0])",
        ),
    ],
)
def test_port_bad_rules_name_the_field_the_value_and_what_was_expected(rules, message):
    with pytest.raises(AnsibleFilterError) as err:
        port_entries(rules)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "plugin, rule, message",
    [
        (
            "v4",
            {"cidr": "192.0.2.0/24", "action": "drop", "rule_idd": 3},
            "rules[0].rule_idd 3: expected no such field; valid fields: cidr, action, rule_id, redirect_slot, mark (did you mean rule_id?)",
        ),
        ("v4", {"cidr": "192.0.2.0/24", "acton": "drop"}, "rules[0].acton 'drop': expected no such field"),
        ("v4", {"cidr": "192.0.2.0/24", "action": "drop", "Action": "pass"}, "(did you mean action?)"),
        (
            "port",
            {"proto": "tcp", "port": 80, "action": "pass", "prot": "udp"},
            "rules[0].prot 'udp': expected no such field; valid fields: proto, port, action, rule_id, redirect_slot, mark (did you mean proto?)",
        ),
        ("port", {"proto": "tcp", "port": 80, "action": "pass", "redirect-slot": 1}, "(did you mean redirect_slot?)"),
        (
            "port",
            {"proto": "tcp", "port": 80, "action": "pass", "ruleid": 1, "weight": 2},
            "rules[0].ruleid 1: expected no such field; valid fields: proto, port, action, rule_id, redirect_slot, mark "
            "(did you mean rule_id?); other unknown fields: 'weight'",
        ),
        ("port", {"proto": "tcp", "port": 80, "action": "pass", 7: "x"}, "rules[0].7 'x': expected no such field"),
    ],
)
def test_misspelt_or_unknown_fields_are_refused_naming_field_value_and_the_valid_fields(plugin, rule, message):
    """A typo is never ignored: the filter fails naming the field, its value, every accepted field and the
    closest one (a non-string key fails the same way instead of crashing the template)."""
    with pytest.raises(AnsibleFilterError) as err:
        (v4_entries if plugin == "v4" else port_entries)([rule])
    assert message in str(err.value)


def test_a_huge_bad_value_is_cut_in_the_message():
    """The message names a bad value without carrying it whole (bounded in memory and on screen)."""
    huge = "x" * 1000000
    for call, rule in (
        (v4_entries, {"cidr": huge, "action": "drop"}),
        (port_entries, {"proto": huge, "port": 1, "action": "pass"}),
        (port_entries, {"proto": "tcp", "port": 1, "action": "pass", "note": huge}),
    ):
        with pytest.raises(AnsibleFilterError) as err:
            call([rule])
        assert len(str(err.value)) < 1000 and "xxxx" in str(err.value)


# ---------------------------------------------------------------- maglev_entries

VIPS = [
    {
        "vip": "192.0.2.10",
        "port": 443,
        "proto": "tcp",
        "mode": "dsr",
        "backends": [{"address": "203.0.113.1", "mac": "02:00:00:00:00:01", "weight": 2}, {"address": "203.0.113.2", "mac": "02:00:00:00:00:02"}],
    },
    {"vip": "2001:db8::10", "port": 53, "proto": "udp", "mode": "ipip", "backends": [{"address": "2001:db8:1::1", "mac": "02:00:00:00:00:fe", "name": "v6-a"}]},
]


def test_maglev_entries_are_lb_entries_ring_entries_and_lb_config_as_bpf_map_items():
    size = 251
    got = lb_tables(VIPS, ring_size=size, config={"tunnel_src_v4": "198.51.100.0/24", "udp_timeout_ms": 5000})
    want = xdp_lb_entries.lb_entries(VIPS, ring_size=size)
    assert got["backend_ids"] == want["backend_ids"] and got["vip_ids"] == want["vip_ids"]
    maps = got["maps"]
    assert sorted(maps) == ["lb_backends", "lb_config", "lb_ring", "lb_vips_v4", "lb_vips_v6"]
    assert maps["lb_vips_v4"] == [{"key": k, "value": v} for k, v in want["lb_vips_v4"]]
    assert maps["lb_vips_v6"] == [{"key": k, "value": v} for k, v in want["lb_vips_v6"]]
    assert maps["lb_backends"] == [{"key": k, "value": v} for k, v in want["lb_backends"]]
    ring = [{"key": k, "value": v} for row in sorted(want["lb_ring"]) for k, v in xdp_lb_entries.ring_entries(row, want["lb_ring"][row], size)]
    assert maps["lb_ring"] == ring and len(ring) == 2 * size
    assert maps["lb_config"] == [{"key": 0, "value": xdp_lb_entries.lb_config(size, 5000, tunnel_src_v4="198.51.100.0/24")}]
    # weights 2:1 -> about two thirds of the IPv4 VIP's ring on 203.0.113.1
    row = maps["lb_vips_v4"][0]["value"]["ring"]
    slots = [item["value"] for item in ring[row * size : (row + 1) * size]]
    assert abs(slots.count(got["backend_ids"]["203.0.113.1"]) / size - 2 / 3) < 0.05


def test_maglev_keeps_the_ids_of_the_running_configuration():
    first = lb_tables(VIPS, ring_size=251)
    shrunk = [dict(VIPS[0], backends=VIPS[0]["backends"][1:])] + VIPS[1:]
    again = lb_tables(shrunk, ring_size=251, backend_ids=first["backend_ids"], vip_ids=first["vip_ids"])
    assert again["backend_ids"]["203.0.113.2"] == first["backend_ids"]["203.0.113.2"]
    assert again["vip_ids"] == first["vip_ids"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"vips": [{"vip": "192.0.2.10", "port": 443, "backends": [{"address": "203.0.113.1", "weight": -1}]}]},
            "vips[0].backends[0].weight -1: expected an integer >= 0",
        ),
        ({"vips": [{"vip": "192.0.2.999", "port": 443}]}, "vips[0].vip '192.0.2.999': expected an IPv4 or IPv6 address"),
        ({"vips": [{"vip": "192.0.2.10", "port": 0}]}, "vips[0].port 0: expected an integer 1..65535"),
        ({"vips": [{"vip": "192.0.2.10", "port": 80, "mode": "nat"}]}, "vips[0].mode 'nat': expected one of dsr, ipip"),
        (
            {"vips": [{"vip": "192.0.2.10", "port": 80, "backends": [{"address": "203.0.113.1", "mac": "zz"}]}]},
            "vips[0].backends[0].mac 'zz': expected a MAC address",
        ),
        ({"vips": [], "ring_size": 1000}, "ring_size 1000: expected a prime number"),
        ({"vips": [], "ring_size": "big"}, "ring_size 'big': expected a prime number"),
        ({"vips": [], "config": {"tunnel_src_v4": "2001:db8::/64"}}, "tunnel_src_v4 '2001:db8::/64': expected an IPv4 prefix"),
        ({"vips": [], "config": {"ttl": 3}}, "config.ttl 3: expected no such field; valid fields: udp_timeout_ms"),
        ({"vips": [], "backend_ids": [1]}, "backend_ids [1]: expected a dict"),
        ({"vips": "192.0.2.10"}, "vips '192.0.2.10': expected a list of VIP declarations"),
    ],
)
def test_maglev_bad_input_names_the_field_the_value_and_what_was_expected(kwargs, message):
    with pytest.raises(AnsibleFilterError) as err:
        lb_tables(**kwargs)
    assert message in str(err.value)


# ---------------------------------------------------------------- through Ansible


def test_filters_load_by_their_fqcn_in_a_template_and_errors_reach_the_operator():
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=paths.COLLECTIONS,
        ANSIBLE_NOCOLOR="1",
        LC_ALL="C.UTF-8",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
    )
    ansible = os.path.join(os.path.dirname(paths.PYTHON), "ansible")
    expr = (
        "{{ {'v4': [{'cidr': '192.0.2.0/24', 'action': 'drop', 'rule_id': 1}] | ebpf.fleet.xdp_filter_v4_entries,"
        " 'ports': [{'proto': 'udp', 'port': 53, 'action': 'drop'}] | ebpf.fleet.xdp_filter_port_entries,"
        " 'lb': ([{'vip': '192.0.2.1', 'port': 80, 'backends': [{'address': '203.0.113.1'}]}]"
        " | ebpf.fleet.maglev_entries(ring_size=101)).maps.lb_ring | length} | to_json }}"
    )
    proc = subprocess.run(
        [ansible, "localhost", "-c", "local", "-m", "debug", "-a", "msg=" + expr, "-o"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(json.loads(proc.stdout[proc.stdout.index("{") :])["msg"])
    drop1 = {"action": "drop", "rule_id": 1, "redirect_slot": 0}
    assert got["v4"] == [
        {"key": "192.0.0.0/16", "value": {"flags": ["blocks", "deeper"]}},
        {"key": "192.0.2.0/24", "value": {"rule": drop1, "flags": ["match"]}},
    ]
    assert got["ports"][0]["key"] == 53 and got["lb"] == 101
    bad = "{{ [{'cidr': '192.0.2.0/33', 'action': 'drop'}] | ebpf.fleet.xdp_filter_v4_entries }}"
    proc = subprocess.run(
        [ansible, "localhost", "-c", "local", "-m", "debug", "-a", "msg=" + bad, "-o"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert proc.returncode != 0
    assert "rules[0].cidr '192.0.2.0/33': expected an IPv4 address or CIDR" in proc.stdout + proc.stderr
