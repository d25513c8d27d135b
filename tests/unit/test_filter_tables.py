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
        {"key": "192.0.0.0/16", "value": {"rule": None, "flags": ["deeper"], "hosts": 1, "blocks": 0}},
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


def test_masks_of_a_16_entry_name_the_24_blocks_with_hosts_and_with_rules():
    table = xdp_filter_tables.expand_v4_raw({"198.51.100.0/24": "a", "198.51.100.128/25": "b", "198.51.9.3": "c", "198.51.200.0/22": "d"})
    hosts, blocks = xdp_filter_tables.masks_v4(table)[int(ipaddress.IPv4Address("198.51.0.0"))]
    assert hosts == 1 << (100 >> 2) | 1 << (9 >> 2)  # the /25 and the exact address are /32 entries
    assert blocks == 1 << (100 >> 2) | 1 << (200 >> 2)  # the /22 is four /24 entries, 200-203: one bit
    assert xdp_filter_tables.lookup_v4(table, "198.51.100.7") == "a"
    assert xdp_filter_tables.lookup_v4(table, "198.51.100.200") == "b"
    assert xdp_filter_tables.lookup_v4(table, "198.51.9.3") == "c"
    assert xdp_filter_tables.lookup_v4(table, "198.51.8.3") is None  # same mask bit as 198.51.9.0/24: the /32 lookup misses
    assert xdp_filter_tables.lookup_v4(table, "198.51.203.1") == "d"


@pytest.mark.parametrize("seed", range(3))
def test_masks_with_every_bit_set_change_no_answer(seed):
    """A mask bit in excess costs the program a lookup that misses, never a different verdict."""
    rng = random.Random(seed)
    rules = {}
    for i in range(200):
        plen = rng.choice([12, 16, 20, 24, 26, 32])
        base = rng.getrandbits(32) & 0x0A3FFFFF | 0x0A000000
        rules[str(ipaddress.IPv4Network((base, plen), strict=False))] = i
    table = xdp_filter_tables.expand_v4_raw(rules)
    full = {block: [(1 << 64) - 1, (1 << 64) - 1] for level, block in table if level == 16}
    for _probe in range(500):
        address = str(ipaddress.IPv4Address(rng.getrandbits(32) & 0x0A3FFFFF | 0x0A000000))
        assert xdp_filter_tables.lookup_v4(table, address, masks=full) == longest_match(rules, address), address


def test_bad_source_names_the_value():
    with pytest.raises(xdp_filter_tables.FilterTableError, match="'192.0.2.300'"):
        xdp_filter_tables.expand_v4_raw({"192.0.2.300": 1})
