"""xdp_filter_tables: the stride table finds the longest matching prefix, as an LPM trie would."""

import ipaddress
import random

import pytest

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import xdp_filter_tables


def longest_match(rules: dict, address: str):
    addr = ipaddress.IPv4Address(address)
    best, best_len = None, -1
    for text, rule in rules.items():
        net = ipaddress.IPv4Network(text, strict=False)
        if addr in net and net.prefixlen > best_len:
            best, best_len = rule, net.prefixlen
    return best


def test_levels_and_flags_of_a_small_table():
    table = xdp_filter_tables.expand_v4_raw({"0.0.0.0/0": "a", "198.51.100.0/25": "b", "198.51.100.3": "c"})
    assert len([k for k in table if k[0] == 16]) == 65536
    top = table[(16, int(ipaddress.IPv4Address("198.51.0.0")))]
    assert top[0] == "a" and top[1] == {"match", "deeper"}
    assert table[(24, int(ipaddress.IPv4Address("198.51.100.0")))] == [None, {"deeper"}]
    assert len([k for k in table if k[0] == 32]) == 128
    assert table[(32, int(ipaddress.IPv4Address("198.51.100.127")))] == ["b", {"match"}]
    assert table[(32, int(ipaddress.IPv4Address("198.51.100.3")))] == ["c", {"match"}]


def test_entries_are_written_as_cidrs_with_flag_names():
    entries = xdp_filter_tables.expand_v4({"192.0.2.7": {"action": "drop", "rule_id": 1}})
    assert entries == [
        {"key": "192.0.0.0/16", "value": {"rule": None, "flags": ["deeper", "hosts"]}},
        {"key": "192.0.2.0/24", "value": {"rule": None, "flags": ["deeper"]}},
        {"key": "192.0.2.7/32", "value": {"rule": {"action": "drop", "rule_id": 1}, "flags": ["match"]}},
    ]


@pytest.mark.parametrize("seed", range(5))
def test_random_tables_agree_with_a_longest_prefix_match(seed):
    rng = random.Random(seed)
    rules = {}
    for i in range(300):
        plen = rng.choice([8, 12, 15, 16, 17, 20, 23, 24, 25, 28, 31, 32])
        base = rng.getrandbits(32) & 0x0A3FFFFF | 0x0A000000  # stay in a corner so prefixes overlap
        rules[str(ipaddress.IPv4Network((base, plen), strict=False))] = i
    table = xdp_filter_tables.expand_v4_raw(rules)
    probes = [str(ipaddress.IPv4Network(p)[rng.randrange(ipaddress.IPv4Network(p).num_addresses)]) for p in rules]
    probes += [str(ipaddress.IPv4Address(rng.getrandbits(32) & 0x0A3FFFFF | 0x0A000000)) for _probe in range(500)]
    for address in probes:
        assert xdp_filter_tables.lookup_v4(table, address) == longest_match(rules, address), address


def test_a_16_entry_says_what_is_below_it_and_the_walk_goes_straight_there():
    table = xdp_filter_tables.expand_v4_raw(
        {"198.51.100.0/24": "a", "198.51.100.128/25": "b", "198.51.9.3": "c", "203.0.113.7": "d", "192.0.2.0/23": "e", "0.0.0.0/0": "z"}
    )
    below = xdp_filter_tables.below_flags_v4(table)
    assert below[int(ipaddress.IPv4Address("198.51.0.0"))] == {"hosts", "blocks"}  # level by level
    assert below[int(ipaddress.IPv4Address("203.0.0.0"))] == {"hosts"}  # /16 then /32
    assert below[int(ipaddress.IPv4Address("192.0.0.0"))] == {"blocks"}  # /16 then /24
    answers = {"198.51.100.7": "a", "198.51.100.200": "b", "198.51.9.3": "c", "198.51.9.4": "z", "203.0.113.7": "d", "203.0.113.8": "z"}
    answers.update({"192.0.3.1": "e", "192.0.4.1": "z", "10.0.0.1": "z"})
    for address, want in answers.items():
        assert xdp_filter_tables.lookup_v4(table, address) == want, address
        assert xdp_filter_tables.lookup_v4(table, address, below={}) == want, address  # a table without them


@pytest.mark.parametrize("seed", range(3))
def test_random_tables_walked_without_the_16_flags_agree_too(seed):
    """A table written before the /16 entries said what is below them is walked level by level: same answers."""
    rng = random.Random(seed)
    rules = {}
    for i in range(200):
        plen = rng.choice([12, 16, 20, 24, 26, 32])
        base = rng.getrandbits(32) & 0x0A3FFFFF | 0x0A000000
        rules[str(ipaddress.IPv4Network((base, plen), strict=False))] = i
    table = xdp_filter_tables.expand_v4_raw(rules)
    for _probe in range(500):
        address = str(ipaddress.IPv4Address(rng.getrandbits(32) & 0x0A3FFFFF | 0x0A000000))
        assert xdp_filter_tables.lookup_v4(table, address, below={}) == longest_match(rules, address), address


def test_bad_source_names_the_value():
    with pytest.raises(xdp_filter_tables.FilterTableError, match="'192.0.2.300'"):
        xdp_filter_tables.expand_v4_raw({"192.0.2.300": 1})
