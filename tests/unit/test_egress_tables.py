"""tc_egress_tables: the derived class fields, the split of marks, and the split stride table tc_egress reads."""

import ipaddress
import random
from fractions import Fraction

import pytest

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import tc_egress_tables, xdp_filter_tables


def test_exact_rates_give_exact_costs():
    value = tc_egress_tables.class_value({"action": "pass", "limit": "drop", "rate_bps": 1000, "burst_bytes": 150})
    assert value["ns_per_byte"] == 1_000_000 << 32
    assert value["burst_ns"] == 150_000_000
    assert (value["derived_rate_bps"], value["derived_burst_bytes"]) == (1000, 150)
    assert tc_egress_tables.fp_ns(60, value["ns_per_byte"]) == 60_000_000
    assert value["action"] == "pass" and value["limit"] == "drop"  # the operator's fields are kept


@pytest.mark.parametrize("seed", range(5))
def test_cost_is_within_one_ns_below_the_exact_value(seed):
    rng = random.Random(seed)
    for _round in range(2000):
        rate = rng.choice([rng.randrange(1, 1000), rng.randrange(1, 10**9), rng.randrange(1, 2**64)])
        count = rng.randrange(0, 2**32)
        got = tc_egress_tables.fp_ns(count, tc_egress_tables.class_value({"rate_bps": rate})["ns_per_byte"])
        exact = Fraction(count * 10**9, rate)
        assert exact - 2 <= got <= exact, (rate, count)


def test_extremes_stay_in_64_bits():
    slow = tc_egress_tables.class_value({"limit": "drop", "rate_bps": 1, "burst_bytes": 2**64 - 1})
    assert slow["ns_per_byte"] == 10**9 << 32
    assert slow["burst_ns"] == (2**32 - 1) * 10**9  # the burst is capped at 2^32-1 bytes, as in the program
    fast = tc_egress_tables.class_value({"limit": "pace", "rate_bps": 2**64 - 1, "horizon_ns": 10**6})
    assert fast["ns_per_byte"] == 0 and fast["burst_ns"] == 0
    assert tc_egress_tables.class_value({"action": "drop"})["ns_per_byte"] == 0


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"limit": "drop", "rate_bps": 0}, "rate_bps: a class with limit 'drop' needs a rate"),
        ({"limit": "pace"}, "rate_bps: a class with limit 'pace' needs a rate"),
        ({"rate_bps": -1}, "rate_bps: -1 is not an integer"),
        ({"rate_bps": 1, "burst_bytes": "10k"}, "burst_bytes: '10k' is not an integer"),
        ({"rate_bps": True}, "rate_bps: True is not an integer"),
        ({"rate_bps": 1, "horizon_ns": 2**64}, "horizon_ns: 18446744073709551616 is not an integer"),
    ],
)
def test_bad_class_fields_are_named(fields, message):
    with pytest.raises(tc_egress_tables.EgressTableError) as err:
        tc_egress_tables.class_value(fields)
    assert str(err.value).startswith(message)


def test_marks_split_at_the_direct_array():
    direct, wide = tc_egress_tables.mark_entries({1: 0, 0xFFFF: 63, 0x10000: 5, 0xFFFFFFFF: 2})
    assert direct == {1: {"class_id": 0, "set": 1}, 0xFFFF: {"class_id": 63, "set": 1}}
    assert wide == {0x10000: {"class_id": 5}, 0xFFFFFFFF: {"class_id": 2}}


@pytest.mark.parametrize(
    "marks,message",
    [
        ({0: 1}, "mark 0: expected an integer from 1 to 2^32-1"),
        ({2**32: 1}, "mark 4294967296: expected"),
        ({5: 64}, "mark 0x5: class 64 is not an integer from 0 to 63"),
        ({5: "af11"}, "mark 0x5: class 'af11' is not"),
    ],
)
def test_bad_marks_are_named(marks, message):
    with pytest.raises(tc_egress_tables.EgressTableError) as err:
        tc_egress_tables.mark_entries(marks)
    assert str(err.value).startswith(message)


def test_split_levels_and_the_host_bitmap():
    level16, level24, level32 = tc_egress_tables.expand_v4({"198.51.100.0/24": "drop", "198.51.100.128/25": "ef", "198.51.100.3": "x", "0.0.0.0/0": "big"})
    net = int(ipaddress.IPv4Address("198.51.100.0"))
    assert level16[net >> 16] == ("big", {"match", "deeper"})
    assert len(level16) == 65536
    rule, flags, hosts = level24[net]
    assert (rule, flags) == ("drop", {"match", "deeper"})
    assert hosts == [1 << 3, 0, 2**64 - 1, 2**64 - 1]  # .3 and .128-.255
    assert len(level32) == 129 and level32[net + 3] == "x"


@pytest.mark.parametrize("seed", range(3))
def test_program_walk_finds_what_the_stride_table_finds(seed):
    """lookup_v4 on the split tables (the program's walk, with the bitmap) agrees with xdp_filter_tables.lookup_v4."""
    rng = random.Random(seed)
    rules = {}
    for i in range(300):
        plen = rng.choice([8, 12, 16, 20, 23, 24, 25, 28, 30, 32])
        addr = (rng.choice([10, 172, 192]) << 24) | rng.getrandbits(24) if plen > 8 else rng.getrandbits(32)
        rules[str(ipaddress.IPv4Network((addr & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF), plen)))] = i
    raw = xdp_filter_tables.expand_v4_raw(rules)
    split = tc_egress_tables.split_v4(raw)
    probes = [rng.getrandbits(32) for _round in range(2000)]
    probes += [int(ipaddress.IPv4Network(p)[0]) + rng.randrange(ipaddress.IPv4Network(p).num_addresses) for p in rng.sample(sorted(rules), 200)]
    for addr in probes:
        assert tc_egress_tables.lookup_v4(split, addr) == xdp_filter_tables.lookup_v4(raw, str(ipaddress.IPv4Address(addr)))
