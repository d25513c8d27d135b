"""Benchmark of xdp_filter and tc_egress (run by `make bench`; not a test). Writes build/bench/dataplane_filter.json.

1. ns per packet through BPF_PROG_TEST_RUN for each packet class, beside a
   floor (a trivial XDP_PASS / XDP_DROP / TC_ACT_OK program) measured the same
   way in the same rounds, with 10k exact IPv4 addresses and 10k IPv4 prefixes
   loaded (and 1k + 1k IPv6). xdp_filter never rewrites, so it is timed with
   `repeat`; tc_egress rewrites, so it and its floor are timed one call per
   packet, averaged over many calls (see MACHINE.md).
2. Scaling: allow, exact source deny, prefix deny and port deny against the
   table size (1k .. 1M prefixes plus as many exact addresses), IPv4 (stride
   table, and the LPM trie for comparison) and IPv6, beside Debian's xdp-filter
   holding the same exact addresses where its maps can.
(Real frames, CPU time per dropped frame beside nftables and user space: tests/bench/bench_real_frames.py.)
Rounds alternate over the allowed CPUs, so every row runs on more than one CPU.

    .venv/bin/python tests/bench/bench_dataplane_filter.py [--quick]     (BENCH_QUICK=1 as --quick)
"""

import argparse
import ctypes
import ipaddress
import os
import random
import socket
import statistics
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, TESTS)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(TESTS, "integration", "dataplane"))

import benchlib  # noqa: E402
from harness import paths  # noqa: E402
from harness.cpus import on_cpu  # noqa: E402

if paths.COLLECTIONS not in sys.path:
    sys.path.insert(0, paths.COLLECTIONS)

from dataplane_btf import lpm  # noqa: E402
from egress_fixture import Egress, skb_ctx  # noqa: E402
from filter_fixture import Filter  # noqa: E402
from harness.progtest import LoadedProgram  # noqa: E402
from packets import IP, TCP, UDP, eth, raw, tcp4, udp4, udp6  # noqa: E402

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import xdp_filter_tables as filter_tables  # noqa: E402
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf  # noqa: E402

RNG = random.Random(20261122)
# sources the benchmark's packets use (documentation ranges); the random tables stay out of 192/8, 198/8 and 203/8
ALLOW_SRC, POPULATED_SRC, EXACT_SRC, PREFIX_SRC = "192.0.2.200", "203.0.113.9", "203.0.113.8", "198.51.100.4"
HOT = {"exact": EXACT_SRC + "/32", "prefix": "198.51.100.0/24", "populated": "203.0.113.128/26"}


def random_v4(count: int, lengths=(32,)):
    """count distinct random prefixes (lengths drawn from `lengths`) outside 192/8, 198/8 and 203/8."""
    out = set()
    while len(out) < count:
        plen = RNG.choice(lengths)
        addr = RNG.getrandbits(32)
        if addr >> 24 in (192, 198, 203, 0, 127) or addr >> 28 >= 14:
            continue
        out.add("%s/%d" % (ipaddress.IPv4Address(addr & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF)), plen))
    return sorted(out)


# a realistic mix (mostly /24, as in routing tables)
PREFIX_LENGTHS = (24,) * 12 + (23,) * 4 + (22,) * 2 + (20,) + (16,)


class Tables:
    """Builds stride-table and LPM rule sets of a given size and swaps them into a loaded filter."""

    def __init__(self, flt: Filter):
        self.flt = flt
        self.rule_cache = {}

    def _rule(self, rule):
        if rule not in self.rule_cache:
            self.rule_cache[rule] = self.flt.rule(*rule)
        return self.rule_cache[rule]

    def stride(self, rules: dict) -> dict:
        bits = self.flt.btf.enum("fleet_stride_flags")
        cache, out = {}, {}
        table = filter_tables.expand_v4_raw(rules)
        below = filter_tables.below_flags_v4(table)
        for (level, block), (rule, flags) in table.items():
            if level == 16:
                flags = flags | below.get(block, set())
            ck = (rule, tuple(sorted(flags)))
            if ck not in cache:
                cache[ck] = self.flt.btf.pack(
                    "fleet_stride_entry", rule=self._rule(rule) if rule else bytes(self.flt.btf.size("fleet_filter_rule")), flags=sum(bits[f] for f in flags)
                )
            out[struct.pack("<I", level) + block.to_bytes(4, "big")] = cache[ck]
        return out

    def install(self, outer: str, entries: dict):
        fd = self.flt.new_rule_set(outer, {}, max_entries=max(len(entries), 1) + 16)
        keys, values = list(entries), list(entries.values())
        for i in range(0, len(keys), 65536):
            libbpf.map_update_batch(fd, b"".join(keys[i : i + 65536]), b"".join(values[i : i + 65536]), len(keys[i : i + 65536]))
        self.flt.swap(outer, fd)
        os.close(fd)  # the outer map holds it

    def load(self, exact: list, prefixes: list):
        """exact addresses and prefixes (all "drop"), plus the benchmark's own hot entries."""
        rules = {p: ("drop", 1) for p in exact}
        rules.update({p: ("drop", 2) for p in prefixes})
        rules[HOT["exact"]] = ("drop", 1)
        rules[HOT["prefix"]] = ("drop", 2)
        rules[HOT["populated"]] = ("drop", 2)  # makes 203.0.113.0/24 "deeper" down to /32
        self.install("filter_v4", self.stride(rules))
        # the rule sets hold network addresses already (random_v4 and HOT): parse them without ipaddress (1M rows)
        exact_map = {socket.inet_aton(p[:-3]): self._rule(r) for p, r in rules.items() if p.endswith("/32")}
        lpm_map = {
            struct.pack("<I", int(p.rsplit("/", 1)[1])) + socket.inet_aton(p.rsplit("/", 1)[0]): self._rule(r)
            for p, r in rules.items()
            if not p.endswith("/32")
        }
        self.install("filter_src_v4", exact_map)
        self.install("filter_pfx_v4", lpm_map)
        return len(rules)


def time_repeat(prog, frame: bytes, repeat: int, rounds: int) -> float:
    """Best of `rounds` runs of `repeat` iterations (the machine is shared: the minimum is the cost, the
    rest is interference)."""
    return min(prog.run(frame, repeat=repeat).duration_ns for _round in range(rounds))


def time_pair(floor, prog, frame: bytes, repeat: int, rounds: int):
    """Floor and program timed alternately on the same frame, best of each."""
    floor_ns, prog_ns = [], []
    for _round in range(rounds):
        floor_ns.append(floor.run(frame, repeat=repeat).duration_ns)
        prog_ns.append(prog.run(frame, repeat=repeat).duration_ns)
    return min(floor_ns), min(prog_ns)


def time_calls(prog, frame: bytes, calls: int, ctx: bytes = b"") -> float:
    """ns of single runs (one call per packet, as the kernel timed each): the mean of the faster half,
    which drops the calls that another process interrupted."""
    runs = sorted(prog.run(frame, ctx=ctx).duration_ns for _round in range(calls))
    return statistics.mean(runs[: len(runs) // 2])


# ---------------------------------------------------------------- shared timing

XDP_FILTER_OBJ = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_all.o"  # Debian xdp-tools: policy allow, all features
XDP_FILTER_MAX = 10000  # its filter_ipv4 / filter_ipv6 hash maps hold this many addresses as shipped
MAP_FLAG_SRC, MAP_FLAG_DST, MAP_FLAG_UDP = 1, 2, 8  # xdp-filter's map value flags


def interleaved(progs: dict, frame: bytes, repeat: int, rounds: int, ctx: bytes = b"", calls: int = 0):
    """{name: [figure of each round]} for programs timed alternately on the same frame, round after round,
    each round on the next allowed CPU (every row runs on more than one CPU). repeat > 1: ns per run of one
    BPF_PROG_TEST_RUN with that repeat (programs that do not rewrite); calls: one call per packet, the mean
    of the faster half of `calls` calls (programs that rewrite; see MACHINE.md)."""
    out = {name: [] for name in progs}
    cpus = benchlib.round_cpus(rounds)
    for cpu in cpus:
        with on_cpu(cpu):
            for name, prog in progs.items():
                if calls:
                    out[name].append(time_calls(prog, frame, calls, ctx))
                else:
                    out[name].append(prog.run(frame, repeat=repeat, ctx=ctx).duration_ns)
    return out, sorted(set(cpus))


class XdpFilter(LoadedProgram):
    """Debian's xdp-filter program (the object its `load` command attaches), loaded for BPF_PROG_TEST_RUN."""

    def __init__(self):
        super().__init__(XDP_FILTER_OBJ, "xdpfilt_alw_all", before_load=self._unpin)

    @staticmethod
    def _unpin(obj):
        """Its maps ask libbpf to pin them by name under /sys/fs/bpf (shared with any xdp-filter on the host, and
        kept after the benchmark): give each run maps of its own instead."""
        set_pin_path = libbpf.lib().bpf_map__set_pin_path
        set_pin_path.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        set_pin_path.restype = ctypes.c_int
        for item in obj.maps():
            if set_pin_path(item._ptr, None) != 0:  # pylint: disable=protected-access
                raise RuntimeError("cannot unset the pin path of xdp-filter's map %s" % item.name)

    def _value(self, flags):
        return struct.pack("<Q", flags) * self.ncpus

    def load_sources(self, keys: list, v6=False):
        fd = self.map_fd("filter_ipv6" if v6 else "filter_ipv4")
        value = self._value(MAP_FLAG_SRC)
        for i in range(0, len(keys), 4096):
            chunk = keys[i : i + 4096]
            libbpf.map_update_batch(fd, b"".join(chunk), value * len(chunk), len(chunk))

    def deny_udp_port(self, num: int):
        self.update("filter_ports", struct.pack("<I", socket.htons(num)), self._value(MAP_FLAG_DST | MAP_FLAG_UDP))


def pad(frame: bytes) -> bytes:
    return frame.ljust(64, b"\0")


# ---------------------------------------------------------------- 1. classes


def bench_filter_classes(args, bench):
    floors = {
        "pass": LoadedProgram(paths.bpf_object("floor_xdp_pass"), "floor_xdp_pass"),
        "drop": LoadedProgram(paths.bpf_object("floor_xdp_drop"), "floor_xdp_drop"),
    }
    flt = Filter()
    tables = Tables(flt)
    size = args.class_size
    entries = tables.load(random_v4(size), random_v4(size, PREFIX_LENGTHS))
    flt.fill("filter_src_v6", {bytes.fromhex("20010db8%024x" % RNG.getrandbits(96)): flt.rule("drop", 3) for _round in range(1000)})
    flt.fill(
        "filter_pfx_v6",
        {struct.pack("<I", 48) + bytes.fromhex("20010db8%04x" % RNG.randrange(1, 0xFF00)) + bytes(10): flt.rule("drop", 4) for _round in range(1000)},
    )
    flt.fill("filter_ports", flt.port_entries({("tcp", 80): ("pass", 5), ("udp", 53): ("drop", 6)}))
    classes = [
        ("allow: default policy, UDP", udp4(ALLOW_SRC, 9999), "pass", {}),
        ("allow: port rule TCP/80", tcp4(ALLOW_SRC, 80), "pass", {}),
        ("allow: source /16 and /24 populated (exact addresses beside it)", udp4(POPULATED_SRC, 9999), "pass", {}),
        ("allow: IPv6 (exact hash + LPM)", udp6("2001:db8:ffff::1", 9999), "pass", {}),
        ("deny: exact source", udp4(EXACT_SRC, 9999), "drop", {}),
        ("deny: source prefix", udp4(PREFIX_SRC, 9999), "drop", {}),
        ("deny: port rule UDP/53", udp4(ALLOW_SRC, 53), "drop", {}),
        ("deny: rate-limited source", udp4(ALLOW_SRC, 9999), "drop", {"rate_pps": 1, "burst_packets": 1, "clock_ns": 1}),
    ]
    key = "filter_classes"
    bench.table(
        key,
        "xdp_filter per packet class (%d IPv4 rules = %d exact + %d prefixes, 1k + 1k IPv6)" % (entries, size, size),
        "BPF_PROG_TEST_RUN with repeat %d (xdp_filter never rewrites the packet), interleaved with a "
        "trivial XDP_PASS / XDP_DROP floor on the same 64-byte frame, %d rounds alternating over the CPUs." % (args.repeat, args.rounds),
        columns=["IPv4 lookup"],
    )
    for mode in ("table", "lpm"):
        for name, frame, kind, extra in classes:
            frame = pad(frame)
            flt.configure(default_verdict="pass", v4_lookup=mode, **extra)
            want = 2 if kind == "pass" else 1
            if "rate_pps" in extra:
                flt.run(frame)  # spend the burst
            assert flt.run(frame).retval == want, (name, mode)
            times, cpus = interleaved({"floor": floors[kind], "prog": flt}, frame, args.repeat, args.rounds)
            lookup = "stride table" if mode == "table" else "exact hash + LPM trie"
            spec = ("<= 55 ns above the floor", "above", "<=", 55) if mode == "table" else None
            bench.row(
                key,
                name,
                times["prog"],
                "ns",
                {
                    "method": "BPF_PROG_TEST_RUN repeat %d" % args.repeat,
                    "packet": "64-byte %s" % ("IPv6 UDP" if "IPv6" in name else "IPv4 TCP" if "TCP" in name else "IPv4 UDP"),
                    "path": name,
                    "encapsulation": "none",
                },
                {"IPv4 lookup": lookup, "cpus": cpus},
                floor=times["floor"],
                floor_name="XDP_%s floor" % kind.upper(),
                target_spec=spec,
            )
    flt.close()
    for floor in floors.values():
        floor.close()
    benchlib.print_table(bench.tables[key]["rows"], key)


def bench_egress_classes(args, bench):
    floor = LoadedProgram(paths.bpf_object("floor_tc_ok"), "floor_tc_ok")
    eg = Egress()
    eg.load_reference()
    rules = {pfx: (3, "tcp", 8443) for pfx in random_v4(args.class_size, PREFIX_LENGTHS)}
    rules.update({"198.51.100.0/24": (2, 0, 0), "198.51.100.128/25": (1, 0, 0)})
    eg.load_dst_v4(rules)
    eg.set_class(4, action="pass", limit="drop", rate_bps=1, burst_bytes=0)
    eg.set_class(5, action="pass", limit="pace", rate_bps=1_000_000_000, horizon_ns=10**18)

    def v4(dst, l4, tos=0):
        return raw(eth() / IP(src="192.0.2.10", dst=dst, tos=tos) / l4).ljust(64, b"\0")

    from packets import IPv6  # pylint: disable=import-outside-toplevel

    classes = [
        ("default class, untouched", v4("192.0.2.99", UDP(dport=9)), 0),
        ("DSCP rewrite by port (IPv4 checksum)", v4("192.0.2.99", TCP(dport=443)), 0),
        ("DSCP rewrite by prefix, IPv6", raw(eth() / IPv6(src="2001:db8::10", dst="2001:db8:beef::1") / UDP(dport=9)), 0),
        ("ACL drop by prefix", v4("198.51.100.5", UDP(dport=9)), 0),
        ("class by skb mark + DSCP", v4("192.0.2.99", UDP(dport=9)), 0x10),
        ("rate-limited drop (class over its rate)", v4("192.0.2.99", UDP(dport=9)), 0x30),
        ("EDT pacing (skb->tstamp)", v4("192.0.2.99", UDP(dport=9)), 0x40),
    ]
    key = "egress_classes"
    bench.table(
        key,
        "tc_egress per class of work against the TC_ACT_OK floor (%d destination prefixes)" % args.class_size,
        "One BPF_PROG_TEST_RUN call per packet (tc_egress rewrites packets), the mean of the faster half of "
        "%d calls per round, program and floor interleaved, %d rounds alternating over the CPUs." % (args.calls, args.rounds),
    )
    for name, frame, mark in classes:
        ctx, fctx = skb_ctx(mark=mark), skb_ctx()
        floors, progs = [], []
        cpus = benchlib.round_cpus(args.rounds)
        for cpu in cpus:
            with on_cpu(cpu):
                floors.append(time_calls(floor, frame, args.calls, fctx))
                progs.append(time_calls(eg, frame, args.calls, ctx))
        bench.row(
            key,
            name,
            progs,
            "ns",
            {
                "method": "BPF_PROG_TEST_RUN, one call per packet, faster half of %d" % args.calls,
                "packet": "%d-byte %s" % (len(frame), "IPv6 UDP" if "IPv6" in name else "IPv4"),
                "path": name,
                "encapsulation": "none",
            },
            {"cpus": sorted(set(cpus))},
            floor=floors,
            floor_name="TC_ACT_OK floor",
            target_spec=("<= 2.0 x the TC floor", "ratio", "<=", 2.0),
        )
    eg.close()
    floor.close()
    benchlib.print_table(bench.tables[key]["rows"], key)


# ---------------------------------------------------------------- 2. scaling

V6_ALLOW, V6_EXACT, V6_PREFIX, V6_PREFIX_SRC = ("2001:db8:ffff:9::1", "2001:db8:ffff:8::8", "2001:db8:ffff:4::/64", "2001:db8:ffff:4::5")
V6_LENGTHS = (48,) * 4 + (56,) * 4 + (64,) * 2


def random_v6(count: int, lengths=(128,)) -> list:
    """count distinct (int network, length) inside 2001:db8::/32, outside 2001:db8:ffff::/48 (the hot entries)."""
    out = set()
    base = 0x20010DB8 << 96
    while len(out) < count:
        plen = RNG.choice(lengths)
        low = RNG.getrandbits(96)
        if low >> 80 == 0xFFFF:
            continue
        out.add(((base | low) & (((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1)), plen))
    return sorted(out)


def load_v6(tables: Tables, exact: list, prefixes: list):
    flt = tables.flt
    drop_exact, drop_pfx = flt.rule("drop", 3), flt.rule("drop", 4)
    exact_map = {net.to_bytes(16, "big"): drop_exact for net, _plen in exact}
    exact_map[ipaddress.IPv6Address(V6_EXACT).packed] = drop_exact
    pfx_map = {struct.pack("<I", plen) + net.to_bytes(16, "big"): drop_pfx for net, plen in prefixes}
    pfx_map[lpm(V6_PREFIX)] = drop_pfx
    tables.install("filter_src_v6", exact_map)
    tables.install("filter_pfx_v6", pfx_map)


def bench_scaling(args, bench):
    """Every path of the filter against the table size (N prefixes + N exact addresses), IPv4 and IPv6, beside
    Debian's xdp-filter holding the same exact addresses where its maps can (it has no prefix match)."""
    floors = {
        "pass": LoadedProgram(paths.bpf_object("floor_xdp_pass"), "floor_xdp_pass"),
        "drop": LoadedProgram(paths.bpf_object("floor_xdp_drop"), "floor_xdp_drop"),
    }
    flt = Filter()
    tables = Tables(flt)
    flt.fill("filter_ports", flt.port_entries({("udp", 53): ("drop", 6)}))
    key = "filter_scaling"
    bench.table(
        key,
        "xdp_filter against table size (N prefixes + N exact addresses), IPv4 and IPv6",
        "BPF_PROG_TEST_RUN with repeat %d, the floor, xdp_filter and (where it holds the rules) Debian's "
        "xdp-filter (xdpfilt_alw_all.o from xdp-tools, loaded the same way) interleaved on the same 64-byte "
        "frame, %d rounds alternating over the CPUs. xdp-filter has no prefix match and its address maps "
        "hold %d entries as shipped, so it runs the exact-address rows up to 10k." % (args.repeat, args.rounds, XDP_FILTER_MAX),
        columns=["family", "table size", "lookup"],
    )
    paths_v4 = [
        ("allow", udp4(ALLOW_SRC, 9999), "pass"),
        ("exact source deny", udp4(EXACT_SRC, 9999), "drop"),
        ("prefix deny", udp4(PREFIX_SRC, 9999), "drop"),
        ("port deny", udp4(ALLOW_SRC, 53), "drop"),
    ]
    paths_v6 = [
        ("allow", udp6(V6_ALLOW, 9999), "pass"),
        ("exact source deny", udp6(V6_EXACT, 9999), "drop"),
        ("prefix deny", udp6(V6_PREFIX_SRC, 9999), "drop"),
        ("port deny", udp6(V6_ALLOW, 53), "drop"),
    ]
    medians = {}
    for size in args.sizes:
        start = time.perf_counter()
        exact4 = random_v4(size)
        tables.load(exact4, random_v4(size, PREFIX_LENGTHS))
        exact6 = random_v6(size)
        load_v6(tables, exact6, random_v6(size, V6_LENGTHS))
        print("tables of %d + %d rules per family loaded in %.1f s" % (size, size, time.perf_counter() - start), flush=True)
        xdpf = None
        if size <= XDP_FILTER_MAX and os.path.exists(XDP_FILTER_OBJ):
            xdpf = XdpFilter()
            hot4 = [ipaddress.IPv4Address(EXACT_SRC).packed]
            xdpf.load_sources(hot4 + [ipaddress.IPv4Network(p).network_address.packed for p in exact4[: XDP_FILTER_MAX - 1]])
            xdpf.load_sources([ipaddress.IPv6Address(V6_EXACT).packed] + [net.to_bytes(16, "big") for net, _plen in exact6[: XDP_FILTER_MAX - 1]], v6=True)
            xdpf.deny_udp_port(53)
        for family, family_paths in (("IPv4", paths_v4), ("IPv6", paths_v6)):
            for pname, frame, kind in family_paths:
                frame = pad(frame)
                modes = ["table", "lpm"] if family == "IPv4" else ["v6"]
                progs = {"floor": floors[kind]}
                for mode in modes:
                    progs[mode] = flt
                if xdpf is not None and pname != "prefix deny":
                    progs["xdp-filter"] = xdpf
                    assert xdpf.run(frame).retval == (2 if kind == "pass" else 1), (pname, family)
                # xdp_filter's lookup mode is a config field: time its modes one after the other
                results = {}
                for index, mode in enumerate(modes):
                    if family == "IPv4":
                        flt.configure(default_verdict="pass", v4_lookup=mode)
                    else:
                        flt.configure(default_verdict="pass")
                    assert flt.run(frame).retval == (2 if kind == "pass" else 1), (pname, family, mode)
                    wanted = ("floor", mode, "xdp-filter") if index == 0 else ("floor", mode)
                    run = {name: prog for name, prog in progs.items() if name in wanted}
                    times, cpus = interleaved(run, frame, args.repeat, args.rounds)
                    results[mode] = (times, cpus)
                for mode, (times, cpus) in results.items():
                    lookup = {"table": "stride table", "lpm": "exact hash + LPM trie", "v6": "exact hash + LPM trie"}[mode]
                    spec = ("<= 55 ns above the floor", "above", "<=", 55) if mode == "table" else None
                    params = {"family": family, "table size": size, "lookup": lookup, "cpus": cpus}
                    if "xdp-filter" in times:
                        ours = [p - f for p, f in zip(times[mode], times["floor"])]
                        theirs = [max(x - f, 1.0) for x, f in zip(times["xdp-filter"], times["floor"])]
                        params["vs xdp-filter"] = statistics.median(o / t for o, t in zip(ours, theirs))
                        params["xdp-filter ns"] = statistics.median(times["xdp-filter"])
                    row = bench.row(
                        key,
                        "xdp_filter %s, %s" % (family, pname),
                        times[mode],
                        "ns",
                        {"method": "BPF_PROG_TEST_RUN repeat %d" % args.repeat, "packet": "64-byte %s UDP" % family, "path": pname, "encapsulation": "none"},
                        params,
                        floor=times["floor"],
                        floor_name="XDP_%s floor" % kind.upper(),
                        target_spec=spec,
                    )
                    medians[(family, size, pname, mode)] = row
                    if "xdp-filter" in times:
                        bench.row(
                            key,
                            "Debian xdp-filter %s, %s" % (family, pname),
                            times["xdp-filter"],
                            "ns",
                            {
                                "method": "BPF_PROG_TEST_RUN repeat %d" % args.repeat,
                                "packet": "64-byte %s UDP" % family,
                                "path": pname + " (hash of addresses)",
                                "encapsulation": "none",
                            },
                            {"family": family, "table size": min(size, XDP_FILTER_MAX), "lookup": "hash (xdp-filter)", "cpus": cpus},
                            floor=times["floor"],
                            floor_name="XDP_%s floor" % kind.upper(),
                        )
                        if mode == "table":
                            benchlib.add_target(row, "<= 0.6 x xdp-filter (ns above the floor)", "vs xdp-filter", 0.6, params["vs xdp-filter"])
        if xdpf is not None:
            xdpf.close()
    # IPv6 against IPv4 (stride table), per path and size: whole ns per packet
    for (family, size, pname, _mode), row in medians.items():
        if family == "IPv6":
            v4 = medians[("IPv4", size, pname, "table")]
            row["params"]["vs IPv4"] = row["median"] / v4["median"]
            benchlib.add_target(row, "<= 1.5 x IPv4 (ns per packet)", "vs IPv4", 1.5, row["params"]["vs IPv4"])
    flt.close()
    for floor in floors.values():
        floor.close()
    rows = bench.tables[key]["rows"]
    benchlib.print_table(rows, key)
    for family in ("IPv4", "IPv6"):
        series = {}
        for row in rows:
            p = row["params"]
            if p["family"] != family:
                continue
            label = "%s (%s)" % (row["includes"]["path"].replace(" (hash of addresses)", ""), "xdp-filter" if row["name"].startswith("Debian") else p["lookup"])
            series.setdefault(label, []).append((p["table size"], row["above"]))
        bench.plot(
            "filter_scaling_%s.png" % family.lower(),
            "xdp_filter %s: ns above the floor against table size" % family,
            "rules per kind (N prefixes + N exact addresses)",
            "ns above the XDP floor",
            series,
            logx=True,
            hline=(55, "target 55 ns") if family == "IPv4" else None,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="as BENCH_QUICK=1: small tables, few rounds")
    args = parser.parse_args()
    quick = args.quick or benchlib.QUICK
    args.repeat = 20_000 if quick else 100_000
    args.rounds = 2 if quick else 8
    args.calls = 1_000 if quick else 10_000
    args.class_size = 1_000 if quick else 10_000
    args.sizes = [1_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    if os.geteuid() != 0:
        sys.exit("needs root (BPF, namespaces)")
    bench = benchlib.Bench(
        "dataplane_filter",
        "Data plane: xdp_filter and tc_egress",
        "ns per packet through BPF_PROG_TEST_RUN beside floors and Debian's xdp-filter measured in the same rounds (tests/bench/bench_dataplane_filter.py).",
    )
    bench_filter_classes(args, bench)
    bench_egress_classes(args, bench)
    bench_scaling(args, bench)
    if not os.path.exists(XDP_FILTER_OBJ):
        bench.not_measured("Debian xdp-filter beside xdp_filter", "%s is missing (Debian package xdp-tools)" % XDP_FILTER_OBJ)
    bench.write()


if __name__ == "__main__":
    main()
