"""Weighted Maglev: deterministic tables, flows spread by weight, minimal disruption, LB map entries."""

import random
import re
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError
from harness import paths

from ansible_collections.ebpf.fleet.plugins.filter.maglev_entries import maglev_entries
from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import maglev, xdp_lb_entries, xdp_lb_tables

RING = maglev.DEFAULT_RING_SIZE


def synthetic_flows(count, seed=7):
    """count distinct TCP 5-tuples towards one VIP, as the data plane would hash them (words)."""
    rng = random.Random(seed)
    vip = maglev.flow_words("192.0.2.10", "192.0.2.10", 0, 0, 6)[1]
    out = []
    for _flow in range(count):
        src = rng.getrandbits(32)
        ports = rng.getrandbits(16) | 0xBB01 << 16  # random source port, destination port 443
        out.append(maglev.hash_words((src, vip, ports, 6)))
    return out


@pytest.fixture(scope="module")
def flow_hashes():
    return synthetic_flows(1_000_000)


def flows_per_backend(table, hashes, size=RING):
    counts = {}
    for h in hashes:
        b = table[(h * size) >> 32]
        counts[b] = counts.get(b, 0) + 1
    return counts


def names_of(table, backends):
    return [backends[i][0] for i in table]


def test_flow_hash_matches_murmur3_reference_vectors():
    # MurmurHash3_x86_32 of 4 zero bytes and of nothing, seed 0 (published test values)
    assert maglev.hash_words([0]) == 0x2362F9DE
    assert maglev.hash_words([]) == 0


def test_flow_words_are_the_little_endian_loads_of_the_packet_bytes():
    words = maglev.flow_words("198.51.100.1", "192.0.2.10", 0x1234, 443, 6)
    assert words == [0x016433C6, 0x0A0200C0, 0xBB013412, 6]
    assert len(maglev.flow_words("2001:db8::1", "2001:db8::2", 1, 2, 17)) == 10


def test_table_is_identical_across_processes_and_input_order():
    backends = [("be%d" % i, 1 + i % 3) for i in range(20)]
    table = maglev.build_table(backends)
    shuffled = list(backends)
    random.Random(3).shuffle(shuffled)
    again = maglev.build_table(shuffled)
    assert names_of(table, backends) == names_of(again, shuffled)
    code = (
        "import sys; sys.path.insert(0, %r); from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import maglev;"
        "b=[('be%%d'%%i,1+i%%3) for i in range(20)]; print(sum(i*v for i,v in enumerate(maglev.build_table(b))))" % paths.COLLECTIONS
    )
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2)
    }
    assert outs == {"%d\n" % sum(i * v for i, v in enumerate(table))}


def test_every_slot_is_filled_and_slot_counts_follow_weights():
    backends = [("a", 1), ("b", 2), ("c", 3), ("d", 4)]
    table = maglev.build_table(backends)
    assert len(table) == RING and min(table) >= 0
    for i, (_name, weight) in enumerate(backends):
        assert abs(table.count(i) / RING - weight / 10) < 0.001


@pytest.mark.parametrize("weights", [[1, 1, 1, 1, 1], [1, 2, 3, 4], [10, 1, 5], [7] * 30 + [3] * 20])
def test_one_million_flows_spread_within_one_percent_of_the_weights(flow_hashes, weights):
    backends = [("192.0.2.%d" % i, w) for i, w in enumerate(weights)]
    table = maglev.build_table(backends)
    counts = flows_per_backend(table, flow_hashes)
    total = sum(weights)
    for i, w in enumerate(weights):
        share = counts.get(i, 0) / len(flow_hashes)
        expected = w / total
        # within 1% of the weight's share (relative) when a backend holds a large share,
        # within 0.1 percentage point for many small backends (statistical noise ~0.03 pp)
        assert abs(share - expected) <= max(0.01 * expected, 0.001), (i, share, expected)


def test_weight_zero_gets_no_slot_and_nothing_at_all_gives_an_empty_ring():
    table = maglev.build_table([("a", 1), ("b", 0), ("c", 1)])
    assert 1 not in table and table.count(0) + table.count(2) == RING
    assert set(maglev.build_table([("a", 0)])) == {maglev.BACKEND_NONE}


@pytest.mark.parametrize("count", [3, 10, 100])
def test_removing_or_adding_a_backend_remaps_at_most_the_minimum_plus_one_percent(flow_hashes, count):
    backends = [("be%d" % i, 1) for i in range(count)]
    before = names_of(maglev.build_table(backends), backends)
    hashes = flow_hashes[:200_000]

    def moved(after):
        return sum(1 for h in hashes if before[(h * RING) >> 32] != after[(h * RING) >> 32]) / len(hashes)

    removed = backends[:1] + backends[2:]
    assert moved(names_of(maglev.build_table(removed), removed)) <= 1 / count + 0.01
    added = backends + [("new", 1)]
    assert moved(names_of(maglev.build_table(added), added)) <= 1 / (count + 1) + 0.01


def test_draining_a_backend_moves_only_its_own_flows(flow_hashes):
    backends = [("be%d" % i, 1) for i in range(10)]
    before = names_of(maglev.build_table(backends), backends)
    drained = [(n, 0 if n == "be4" else w) for n, w in backends]
    after = names_of(maglev.build_table(drained), drained)
    assert "be4" not in after
    kept = sum(1 for a, b in zip(before, after) if a == b and a != "be4")
    assert kept / RING >= 0.9 - 0.01


def test_thousand_backends_build_in_well_under_two_seconds():
    import time

    backends = [("2001:db8::%x" % i, 1 + i % 4) for i in range(1000)]
    start = time.perf_counter()
    table = maglev.build_table(backends, maglev.ring_size_for(1000))
    assert len(table) == 100003
    start2 = time.perf_counter()
    maglev.build_table(backends, RING, min_slots=0)
    # generous bound: this is about scale (no per-slot quadratic work), not a benchmark
    assert start2 - start < 2 and time.perf_counter() - start2 < 2


@pytest.mark.parametrize(
    "size, backends, match",
    [
        (65536, [("a", 1)], "prime"),
        (101, [("a", 1), ("b", 1)], "at least 100 slots"),
        (RING, [("a", 1), ("a", 2)], "unique"),
        (RING, [("a", -1)], "weight"),
    ],
)
def test_bad_tables_are_refused_with_the_field_and_value(size, backends, match):
    with pytest.raises(maglev.MaglevError, match=match):
        maglev.build_table(backends, size)


def test_lb_entries_keep_backend_ids_stable_and_map_the_ring_to_ids():
    vips = [
        {
            "vip": "192.0.2.10",
            "port": 443,
            "proto": "tcp",
            "mode": "dsr",
            "backends": [{"address": "203.0.113.1", "mac": "02:00:00:00:00:01"}, {"address": "203.0.113.2", "mac": "02:00:00:00:00:02", "weight": 2}],
        },
        {"vip": "2001:db8::10", "port": 53, "proto": "udp", "mode": "ipip", "backends": [{"address": "2001:db8:1::1", "mac": "02:00:00:00:00:03"}]},
    ]
    first = xdp_lb_entries.lb_entries(vips, ring_size=1009)
    assert first["lb_vips_v4"] == [
        (
            {"vip": "192.0.2.10", "port": 443, "proto": "tcp"},
            {"id": first["vip_ids"]["192.0.2.10:443/tcp"], "ring": first["vip_ids"]["192.0.2.10:443/tcp"], "mode": "dsr"},
        )
    ]
    assert first["lb_vips_v6"][0][1]["mode"] == "ipip"
    ids = first["backend_ids"]
    assert sorted(ids.values()) == [0, 1, 2]
    ring = first["lb_ring"][first["vip_ids"]["192.0.2.10:443/tcp"]]
    assert set(ring) == {ids["203.0.113.1"], ids["203.0.113.2"]} and len(ring) == 1009
    assert dict(first["lb_backends"])[ids["2001:db8:1::1"]]["family"] == "ipv6"
    # remove 203.0.113.1: the others keep their ids; a new backend takes the lowest free id
    vips[0]["backends"][0] = {"address": "203.0.113.9", "mac": "02:00:00:00:00:09"}
    second = xdp_lb_entries.lb_entries(vips, ring_size=1009, backend_ids=ids, vip_ids=first["vip_ids"])
    assert second["backend_ids"]["203.0.113.2"] == ids["203.0.113.2"]
    assert second["backend_ids"]["2001:db8:1::1"] == ids["2001:db8:1::1"]
    assert second["backend_ids"]["203.0.113.9"] == ids["203.0.113.1"]


@pytest.mark.parametrize(
    "vip, match",
    [
        ({"vip": "192.0.2.300", "port": 1}, r"vips\[0\].vip '192.0.2.300'"),
        ({"vip": "192.0.2.1", "port": 0}, r"vips\[0\].port 0"),
        ({"vip": "192.0.2.1", "port": 80, "proto": "sctp"}, "proto 'sctp': expected one of tcp, udp"),
        ({"vip": "192.0.2.1", "port": 80, "mode": "nat"}, "mode 'nat'"),
        ({"vip": "192.0.2.1", "port": 80, "backends": [{"address": "203.0.113.1", "mac": "zz"}]}, "mac 'zz'"),
        ({"vip": "192.0.2.1", "port": 80, "backends": [{"address": "203.0.113.1", "weight": "x"}]}, "weight 'x'"),
    ],
)
def test_lb_entries_refuse_bad_declarations_naming_field_and_value(vip, match):
    with pytest.raises(maglev.MaglevError, match=match):
        xdp_lb_entries.lb_entries([vip], ring_size=1009)


def test_lb_config_is_written_in_operator_notation_and_checked():
    cfg = xdp_lb_entries.lb_config(udp_timeout_ms=5000, lb_mac="02:00:00:00:FF:01", tunnel_src_v4="203.0.113.0/24")
    assert cfg == {"ring_size": 65537, "udp_timeout_ms": 5000, "lb_mac": "02:00:00:00:ff:01", "tunnel_src_v4": "203.0.113.0/24", "tunnel_src_v6": "::/0"}
    with pytest.raises(maglev.MaglevError, match="tunnel_src_v6 '198.51.100.0/24': expected an IPv6 prefix"):
        xdp_lb_entries.lb_config(tunnel_src_v6="198.51.100.0/24")
    with pytest.raises(maglev.MaglevError, match="udp_timeout_ms -1"):
        xdp_lb_entries.lb_config(udp_timeout_ms=-1)


def test_ring_entries_place_a_row_at_row_times_ring_size():
    assert xdp_lb_entries.ring_entries(2, [7, 8, 9], 3) == [(6, 7), (7, 8), (8, 9)]
    with pytest.raises(maglev.MaglevError, match="expected 3 backend ids, got 2"):
        xdp_lb_entries.ring_entries(0, [1, 2], 3)


# ---------------------------------------------------------------- unknown fields (a typo never builds an empty ring)


@pytest.mark.parametrize(
    "vip, match",
    [
        (
            {"vip": "192.0.2.1", "port": 80, "backend": [{"address": "203.0.113.1"}]},
            r"vips\[0\].backend \[\{'address': '203.0.113.1'\}\]: expected no such field; valid fields: vip, port, proto, "
            r"mode, backends",
        ),
        (
            {"vip": "192.0.2.1", "port": 80, "backends": [{"address": "203.0.113.1", "wieght": 3}]},
            r"vips\[0\].backends\[0\].wieght 3: expected no such field; valid fields: address, mac, weight, name",
        ),
        ({"vip": "192.0.2.1", "port": 80}, r"vips\[0\].backends: missing; expected a list"),
        ({"vip": "192.0.2.1", "port": 80, "backends": {"address": "203.0.113.1"}}, r"vips\[0\].backends \{.*expected a list"),
        ({"vip": "192.0.2.1", "port": 80, "backends": ["203.0.113.1"]}, r"vips\[0\].backends\[0\] '203.0.113.1': expected a dict"),
        (
            {"vip": "192.0.2.1", "port": 80, "backends": [{"address": "203.0.113.1"}, {"address": "203.0.113.1"}]},
            r"vips\[0\].backends\[1\].name '203.0.113.1': expected names unique within a VIP",
        ),
        (
            {"vip": "192.0.2.1", "port": 80, "backends": [{"address": "203.0.113.1", "name": ""}]},
            r"vips\[0\].backends\[0\].name '': expected a non-empty string",
        ),
    ],
)
def test_declarations_with_unknown_or_missing_fields_are_refused_naming_them(vip, match):
    with pytest.raises(maglev.MaglevError, match=match):
        xdp_lb_entries.validate_vips([vip])
    with pytest.raises(maglev.MaglevError, match=match):
        xdp_lb_entries.lb_entries([vip], ring_size=1009)


def test_the_filter_refuses_a_misspelt_field_at_every_level():
    good = {"vip": "192.0.2.1", "port": 80, "backends": [{"address": "203.0.113.1", "weight": 2}]}
    assert maglev_entries([good], ring_size=101)["maps"]["lb_ring"]
    for bad, field in (
        ({"backend": good["backends"]}, "vips[0].backend"),
        ({"backends": [{"address": "203.0.113.1", "wieght": 2}]}, "vips[0].backends[0].wieght"),
    ):
        vip = {k: v for k, v in good.items() if k != "backends"}
        vip.update(bad)
        with pytest.raises(AnsibleFilterError, match=r"maglev_entries: %s .*expected no such field" % re.escape(field)):
            maglev_entries([vip], ring_size=101)
    with pytest.raises(AnsibleFilterError, match=r"config.udp_timeout 1: expected no such field"):
        maglev_entries([good], ring_size=101, config={"udp_timeout": 1})


def test_port_and_weight_given_as_decimal_strings_by_templating_are_taken_as_numbers():
    (vip,) = xdp_lb_entries.validate_vips([{"vip": "192.0.2.1", "port": "80", "backends": [{"address": "203.0.113.1", "weight": "2"}]}])
    assert vip.port == 80 and vip.backends[0].weight == 2


# ---------------------------------------------------------------- lb_tables plans: ids from the kernel's state only


def _state_after(plan, ring_size, rows=4, before=None):
    """The State a kernel would hold after applying plan (what read_state would read back)."""
    ring = dict(before.ring) if before is not None else {}
    for vp in plan.vips_added + plan.vips_changed:
        if vp.ring:
            ring[vp.row] = vp.ring
    backends = {addr: (bid, None) for addr, bid in plan.backend_ids.items()}
    for bid, (addr, mac, _kind) in plan.backend_writes.items():
        backends[addr] = (bid, mac)
    if before is not None:
        for addr, (bid, mac) in before.backends.items():
            if addr in backends and backends[addr][1] is None:
                backends[addr] = (bid, mac)
    used = {bid for bid, _mac in backends.values()}
    free = [i for i in range(max(used, default=-1) + 1) if i not in used]
    vips = {}
    for vp in plan.vips_added + plan.vips_changed + plan.vips_kept:
        vips[vp.vip.ident] = xdp_lb_tables.LiveVip(vp.vip.ident, b"", 4, vp.vid, vp.row, vp.vip.mode)
    return xdp_lb_tables.State(
        ring_size=ring_size, config={}, config_raw=b"", backends=backends, backend_slots=64, free_ids=free, vips=vips, vip_slots=16, rows=rows, ring=ring
    )


def _declare(weights, vip="192.0.2.10"):
    return xdp_lb_entries.validate_vips(
        [{"vip": vip, "port": 80, "backends": [{"address": "198.51.100.%d" % n, "mac": "02:00:00:00:00:%02x" % n, "weight": w} for n, w in weights.items()]}]
    )


def test_lb_tables_plan_keeps_every_other_backend_id_across_add_remove_reweight_drain_without_hidden_state():
    size = 1009
    state = xdp_lb_tables.empty_state(size)
    state.rows, state.backend_slots, state.vip_slots = 4, 64, 16
    plan = xdp_lb_tables.make_plan(_declare({1: 1, 2: 1, 3: 1}), {}, size, state, None)
    ids = dict(plan.backend_ids)
    assert sorted(ids.values()) == [0, 1, 2]
    state = _state_after(plan, size)
    for weights, gone in (({1: 1, 2: 1, 3: 1, 4: 1}, None), ({1: 1, 2: 3, 3: 1, 4: 1}, None), ({1: 1, 2: 3, 3: 0, 4: 1}, None), ({2: 3, 3: 0, 4: 1}, 1)):
        row = state.vips["192.0.2.10:80/tcp"].row
        plan = xdp_lb_tables.make_plan(_declare(weights), {}, size, state, None)
        for addr, bid in ids.items():
            if addr != "198.51.100.%s" % gone:
                assert plan.backend_ids[addr] == bid
        (changed,) = plan.vips_changed
        assert changed.old_row == row and changed.row != row  # a spare row, then the flip
        if gone:
            assert plan.backend_frees == {ids["198.51.100.1"]: "198.51.100.1"}
        ids.update({a: b for a, b in plan.backend_ids.items() if a not in ids})
        state = _state_after(plan, size, before=state)
        assert xdp_lb_tables.make_plan(_declare(weights), {}, size, state, None).vips_changed == []
    # the drained backend keeps its id and gets no slot
    assert plan.backend_ids["198.51.100.3"] == ids["198.51.100.3"]
    assert ids["198.51.100.3"] not in changed.slots_after


def test_lb_tables_plan_needs_a_spare_row_for_a_swap_and_says_so_before_writing():
    size = 211
    state = xdp_lb_tables.empty_state(size)
    state.rows, state.backend_slots, state.vip_slots = 1, 64, 16
    plan = xdp_lb_tables.make_plan(_declare({1: 1}), {}, size, state, None)
    state = _state_after(plan, size, rows=1)
    with pytest.raises(xdp_lb_tables.LbTablesError, match="lb_ring holds 1 rows of 211 slots and every row is in use"):
        xdp_lb_tables.make_plan(_declare({1: 1, 2: 1}), {}, size, state, None)


def test_lb_tables_plan_never_reuses_a_row_another_vip_still_refers_to():
    size = 211
    state = xdp_lb_tables.empty_state(size)
    state.rows, state.backend_slots, state.vip_slots = 2, 64, 16
    two = _declare({1: 1}) + _declare({2: 1}, vip="192.0.2.20")
    state = _state_after(xdp_lb_tables.make_plan(two, {}, size, state, None), size, rows=2)
    # both VIPs on row 0 (as a hand-written table could have them), row 1 spare
    for live in state.vips.values():
        live.row = 0
    changed = _declare({1: 1, 3: 1}) + _declare({2: 1, 3: 1}, vip="192.0.2.20")
    with pytest.raises(xdp_lb_tables.LbTablesError, match="every row is in use"):
        xdp_lb_tables.make_plan(changed, {}, size, state, None)


@pytest.mark.parametrize(
    "weights, want",
    [
        ({1: 1, 2: 1, 3: 1, 4: 1}, {"4": "added", "1": "rebalanced", "2": "rebalanced", "3": "rebalanced"}),
        ({1: 1, 2: 3, 3: 1}, {"1": "rebalanced", "2": "reweighted", "3": "rebalanced"}),
        ({1: 1, 2: 1, 3: 0}, {"1": "rebalanced", "2": "rebalanced", "3": "drained"}),
        ({1: 1, 2: 1}, {"1": "rebalanced", "2": "rebalanced", "3": "removed"}),
    ],
)
def test_lb_tables_diff_names_what_the_operator_changed_and_how_many_slots_move(weights, want):
    size = 1009
    state = xdp_lb_tables.empty_state(size)
    state.rows, state.backend_slots, state.vip_slots = 4, 64, 16
    state = _state_after(xdp_lb_tables.make_plan(_declare({1: 1, 2: 1, 3: 1}), {}, size, state, None), size)
    plan = xdp_lb_tables.make_plan(_declare(weights), {}, size, state, None)
    (change,) = xdp_lb_tables.describe(plan, state)["vips_changed"]
    assert {c["backend"].rsplit(".", 1)[1]: c["change"] for c in change["backend_changes"]} == want
    assert 0 < change["slots_moved"] < size and change["ring"] == [0, 1]
    after = xdp_lb_tables.diff_text(xdp_lb_tables.describe(plan, state))["after"]
    assert "vip 192.0.2.10:80/tcp ring row 1: %d slots move" % change["slots_moved"] in after
