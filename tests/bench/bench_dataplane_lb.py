"""Benchmark: xdp_lb ns per packet through BPF_PROG_TEST_RUN, beside floors measured in the same rounds.

Run by `make bench` (not a test); writes build/bench/dataplane_lb.json. xdp_lb rewrites packets, and
BPF_PROG_TEST_RUN with repeat > 1 reuses the rewritten buffer, so every program here (floors included) is
timed one call per packet (repeat = 1), averaged over CALLS calls, program and floor in alternating rounds,
the rounds alternating over the allowed CPUs (every row runs on more than one CPU). Each row is sampled in
several passes over the whole set, so a row's spread covers several moments of the run.

Rows: established flow (connection-table hit), SYN (Maglev choice, entry rewritten), new flow (a new 5-tuple
on every packet: a real connection-table insert; table partly filled, and full so every insert evicts),
non-VIP (pass); DSR and IPIP; 1 VIP with 10, 100 and 1000 backends; 100 VIPs of 100 backends (IPv4 DSR, IPv4
IPIP, IPv6 DSR). The rows that stay on one path when fed their own output (DSR hits and SYNs, non-VIP) are
also timed with repeat (a column). So are the new-flow rows, through a driver (tests/bpf/lb_newflow_driver.c)
that gives each iteration a new 5-tuple and undoes the previous one's encapsulation before it tail-calls xdp_lb,
or the XDP_TX floor (the driver's work is on both sides): packets back to back, as a busy core sees them, where
one call per packet runs Python and a system call between two packets, which evicts the tables' cache lines.
BENCH_QUICK=1: 1 VIP of 10 backends, few calls.

A second table times the parts of the new-flow path alone (tests/bpf/lb_newflow_parts.c), in the same passes:
the connection-table lookup and insert (xdp_lb's key, value and flags; and the same table with the common LRU
list, which xdp_lb does not use, for comparison), and the flow hash with the read of a Maglev ring slot.
"""

import os
import random
import statistics
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, TESTS)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(TESTS, "integration", "dataplane"))

from harness import bpfbuild, paths  # noqa: E402

sys.path.insert(0, paths.COLLECTIONS)

import benchlib  # noqa: E402
from harness.cpus import cpus, on_cpu  # noqa: E402
from harness.progtest import LoadedProgram  # noqa: E402
from lb_helpers import LB  # noqa: E402
from scapy.layers.inet import IP, TCP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw, raw  # noqa: E402

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import maglev  # noqa: E402
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf  # noqa: E402

QUICK = benchlib.QUICK
CALLS = int(os.environ.get("BENCH_CALLS", benchlib.pick(300, 3000)))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", benchlib.pick(2, 2)))
PASSES = int(os.environ.get("BENCH_PASSES", benchlib.pick(1, 3)))  # whole-set passes
REPEAT = benchlib.pick(10000, 100000)
NEW_FLOW_REPEAT = benchlib.pick(1024, 4096)  # new flows per driver call: the partly filled table stays partly filled
CT_PER_CPU = 65536  # FLEET_LB_CONNTRACK_PER_CPU: the connection table's capacity per CPU
TARGETS = {"established": 100, "new flow": 240, "non-VIP": 40}  # ns above the floor (issue 13)


def frame(dst, sport, flags="A", v6=False, dport=80):
    l3 = IPv6(src="2001:db8:ffff::7", dst=dst) if v6 else IP(src="198.51.100.7", dst=dst)
    return raw(Ether(dst="02:00:00:00:aa:01", src="02:00:00:00:cc:01") / l3 / TCP(sport=sport, dport=dport, flags=flags) / Raw(b"x" * 6))


def ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class NewFlows:
    """Packets of never-seen 5-tuples for one VIP: the source address (documentation ranges) and port change on
    every packet, so each one pays the connection-table insert."""

    def __init__(self, target, v6=False):
        self.template = bytearray(frame(target, 1024, "A", v6))
        self.v6 = v6
        self.next = 0

    def __getitem__(self, _index):
        n = self.next
        self.next += 1
        host, port = divmod(n, 64000)
        pkt = self.template
        struct.pack_into("!H", pkt, 54 if self.v6 else 34, 1024 + port)
        if self.v6:
            struct.pack_into("!I", pkt, 34, 0x10000 + host)  # 2001:db8:ffff::1:0 and up
        else:
            pkt[26:30] = bytes((198, 51, 100, 1 + host % 254)) if host < 254 * 256 else bytes(4)
            pkt[18:20] = struct.pack("!H", host // 254)  # IP id: keeps (src, sport, id) distinct in the frame
            pkt[24:26] = b"\0\0"
            pkt[24:26] = struct.pack("!H", ip_checksum(bytes(pkt[14:34])))
        return bytes(pkt)

    def __len__(self):
        return 1 << 62


def mean_ns(fd, packets, cursor):
    """Mean ns of the fastest 90 % of CALLS single calls (the slowest tenth are the calls another process or an
    interrupt cut into on this shared machine); packets taken in turn (a NewFlows source hands out new ones)."""
    runs = []
    for _call in range(CALLS):
        runs.append(libbpf.prog_test_run(fd, packets[cursor[0] % len(packets)]).duration_ns)
        cursor[0] += 1
    runs.sort()
    return statistics.mean(runs[: max(1, CALLS * 9 // 10)])


def backend_address(n, per_vip):
    """A documentation address unique within its VIP: a host of 198.51.100.0/24 while one /24 holds them all,
    else of 2001:db8:be::/64 (so IPIP to 1000 backends sends IPv4 in IPv6)."""
    return "198.51.100.%d" % (n + 1) if per_vip <= 254 else "2001:db8:be::%x" % (n + 1)


def vips(count, backends, v6=False, mode="dsr"):
    out = []
    for v in range(count):
        vip = ("2001:db8::%x" % (0x100 + v)) if v6 else "192.0.%d.%d" % (2 + v // 250, v % 250 + 1)
        out.append(
            {
                "vip": vip,
                "port": 80,
                "proto": "tcp",
                "mode": mode,
                "backends": [
                    {
                        "name": "be%d" % b,
                        "address": backend_address(b - v * backends, backends),
                        "mac": "02:00:%02x:%02x:%02x:%02x" % (b >> 24 & 255, b >> 16 & 255, b >> 8 & 255, b & 255),
                    }
                    for b in range(v * backends, (v + 1) * backends)
                ],
            }
        )
    return out


def fill_conntrack(lb, target, v6, per_cpu):
    """per_cpu new flows inserted by the program on each CPU (each CPU has its own LRU list); lb: an LB or a
    LoadedProgram."""
    fd = getattr(lb, "prog", lb).prog_fd
    flows = NewFlows(target, v6)
    flows.next = 1 << 24  # apart from the measured flows
    for cpu in cpus():
        with on_cpu(cpu):
            for _flow in range(per_cpu):
                libbpf.prog_test_run(fd, flows[0])


def classes(lb, target, v6=False, full=False):
    """(path, packets, floor kind) for one VIP address."""
    rng = random.Random(5)
    established = [frame(target, 40000, "A", v6)]
    lb.run(established[0])  # inserted: every later call is a connection-table hit
    syn = [frame(target, rng.randrange(1024, 65536), "S", v6) for _packet in range(256)]
    for cpu in cpus():  # inserted once: every measured SYN finds its entry and rewrites it
        with on_cpu(cpu):
            for packet in syn:
                lb.run(packet)
    non_vip = [frame("2001:db8::dead" if v6 else "203.0.113.99", 40000, "A", v6)]
    out = [
        ("established", established, "tx"),
        ("SYN", syn, "tx"),
        ("new flow" + (", table full" if full else ", table partly filled"), NewFlows(target, v6), "tx"),
        ("non-VIP", non_vip, "pass"),
    ]
    return out


def driver(target_fd):
    """tests/bpf/lb_newflow_driver.c loaded with target_fd (xdp_lb or the floor) in its slot 0."""
    prog = LoadedProgram(paths.bpf_object("lb_newflow_driver"), "lb_newflow_driver")
    prog.update("driver_next", struct.pack("<I", 0), struct.pack("<I", target_fd))
    return prog


def parts_cases(full_rows):
    """The new-flow path's parts, each a fixture program fed new flows (tests/bpf/lb_newflow_parts.c)."""
    ncpus = libbpf.num_possible_cpus()
    specs = [("lookup miss + insert, one LRU list per CPU (as xdp_lb)", {"LB_PART": 1}, None, False)]
    specs.append(("lookup miss + insert, common LRU list (not used: global lock)", {"LB_PART": 1, "LB_CT_FLAGS": 0}, CT_PER_CPU * ncpus, False))
    if full_rows:
        specs.append(("lookup miss + insert, one LRU list per CPU, table full", {"LB_PART": 1}, None, True))
        specs.append(("lookup miss + insert, common LRU list, table full", {"LB_PART": 1, "LB_CT_FLAGS": 0}, CT_PER_CPU * ncpus, True))
    specs.append(("flow hash + Maglev ring slot read (65537 slots)", {"LB_PART": 2}, None, False))
    out = []
    for name, defines, total, full in specs:
        sizes = {"parts_conntrack": total} if total else None
        prog = LoadedProgram(bpfbuild.compile_fixture("lb_newflow_parts", **defines), "lb_newflow_parts", max_entries=sizes)
        if defines["LB_PART"] == 1:
            fill_conntrack(prog, "192.0.2.1", False, CT_PER_CPU + 1024 if full else CT_PER_CPU // 4)
        out.append(
            {
                "name": name,
                "prog": prog,
                "driver": driver(prog.prog_fd),
                "packets": NewFlows("192.0.2.1"),
                "cursor": [0],
                "prog_ns": [],
                "floor_ns": [],
                "rep": [],
                "cpus": set(),
            }
        )
    return out


def main():
    floor_pass = LoadedProgram(paths.bpf_object("lb_floor_pass"), "lb_floor_pass")
    floor_tx = LoadedProgram(paths.bpf_object("lb_floor_tx"), "lb_floor_tx")
    floors = {"pass": floor_pass, "tx": floor_tx}
    bench = benchlib.Bench(
        "dataplane_lb",
        "Data plane: xdp_lb",
        "ns per packet through BPF_PROG_TEST_RUN beside XDP_TX / XDP_PASS floors in the same rounds (tests/bench/bench_dataplane_lb.py).",
    )
    key = "lb"
    bench.table(
        key,
        "xdp_lb per packet: path, encapsulation, VIPs x backends",
        "One BPF_PROG_TEST_RUN call per packet (xdp_lb rewrites it), the mean of the fastest 90 %% of %d calls per round, program "
        "and floor (XDP_TX for VIP packets, XDP_PASS for the others, one call per packet as well) "
        "interleaved, %d rounds alternating over the CPUs in each of %d passes over every row. The "
        "connection table holds %d entries per CPU; 'partly filled' starts at a quarter, 'full' is filled "
        "past capacity first so every insert evicts. The repeat column times the same packet with repeat "
        "%d where the program's output takes the same path again; for the new-flow rows, %d new flows per call made "
        "by a driver program in front of xdp_lb and of the floor. Katran on this machine (measured the "
        "same way earlier): +126 ns established, +147 ns SYN, +49 ns non-VIP." % (CALLS, ROUNDS, PASSES, CT_PER_CPU, REPEAT, NEW_FLOW_REPEAT),
        columns=["VIPs x backends", "encapsulation", "repeat: above floor"],
    )
    configs = []  # (family, mode, vip count, backends, full)
    if QUICK:
        configs = [("IPv4", "dsr", 1, 10, False), ("IPv4", "ipip", 1, 10, False), ("IPv4", "dsr", 1, 10, True)]
    else:
        for count in (10, 100, 1000):
            for mode in ("dsr", "ipip"):
                configs.append(("IPv4", mode, 1, count, False))
        configs += [
            ("IPv4", "dsr", 1, 100, True),
            ("IPv4", "ipip", 1, 100, True),
            ("IPv4", "dsr", 100, 100, False),
            ("IPv4", "ipip", 100, 100, False),
            ("IPv6", "dsr", 100, 100, False),
        ]
    cases, lbs = [], []
    floor_driver = driver(floor_tx.prog_fd)
    drivers_all = [floor_driver]
    for family, mode, nvips, nbackends, full in configs:
        v6 = family == "IPv6"
        print("building %s %s: %d VIPs x %d backends%s ..." % (family, mode, nvips, nbackends, ", table full" if full else ""), flush=True)
        decl = vips(nvips, nbackends, v6=v6, mode=mode)
        ring = maglev.ring_size_for(nbackends) if nvips == 1 else maglev.DEFAULT_RING_SIZE
        lb = LB(decl, ring_size=ring, rows=nvips, max_backends=max(4096, nvips * nbackends))
        lbs.append(lb)
        target = decl[nvips // 2]["vip"]
        fill_conntrack(lb, target, v6, CT_PER_CPU + 1024 if full else CT_PER_CPU // 4)
        if mode == "ipip":
            encap = "IPIP (IPv4 in %s)" % ("IPv6" if nbackends > 254 else "IPv4")
        else:
            encap = "DSR (MAC rewrite)"
        for path, packets, floor in classes(lb, target, v6, full):
            if full and not path.startswith("new flow"):
                continue
            if path == "non-VIP" and mode == "ipip":
                continue  # the same path as DSR's: no VIP, no encapsulation
            result = lb.run(packets[0] if not isinstance(packets, NewFlows) else frame(target, 999, "A", v6))
            want = 2 if floor == "pass" else 3
            assert result.retval == want, (family, mode, path, result.retval)
            repeat = mode == "dsr" and path in ("established", "SYN", "non-VIP")
            drivers = None
            if path.startswith("new flow"):
                drivers = (driver(lb.prog.prog_fd), floor_driver)
                drivers_all.append(drivers[0])
            cases.append(
                {
                    "path": path,
                    "family": family,
                    "mode": mode,
                    "encap": "none" if path == "non-VIP" else encap,
                    "tables": "%d x %d" % (nvips, nbackends),
                    "backends": nbackends,
                    "vips": nvips,
                    "lb": lb,
                    "packets": packets,
                    "floor": floor,
                    "repeat": repeat,
                    "drivers": drivers,
                    "cursor": [0],
                    "prog_ns": [],
                    "floor_ns": [],
                    "rep": [],
                    "cpus": set(),
                }
            )
    parts_key = "lb_parts"
    bench.table(
        parts_key,
        "xdp_lb's new-flow path, part by part",
        "Each part alone in a small XDP program (tests/bpf/lb_newflow_parts.c) fed a new IPv4 5-tuple on every call, "
        "timed like the rows above (one call per packet, beside the XDP_TX floor, in the same passes): where a new "
        "flow's time goes. The connection table has xdp_lb's key, value and size (%d entries per CPU), a quarter "
        "filled, or full so every insert evicts. The back-to-back column: %d new flows per call through the driver "
        "in front of the part and of the floor." % (CT_PER_CPU, NEW_FLOW_REPEAT),
        columns=["back to back: above floor"],
    )
    parts = parts_cases(not QUICK or any(c[4] for c in configs))
    for npass in range(PASSES):
        print("pass %d/%d ..." % (npass + 1, PASSES), flush=True)
        for part in parts:
            for cpu in benchlib.round_cpus(ROUNDS):
                with on_cpu(cpu):
                    part["floor_ns"].append(mean_ns(floor_tx.prog_fd, part["packets"], [0]))
                    part["prog_ns"].append(mean_ns(part["prog"].prog_fd, part["packets"], part["cursor"]))
                    pkt = part["packets"][0]
                    base = libbpf.prog_test_run(floor_driver.prog_fd, pkt, repeat=NEW_FLOW_REPEAT).duration_ns
                    part["rep"].append(libbpf.prog_test_run(part["driver"].prog_fd, pkt, repeat=NEW_FLOW_REPEAT).duration_ns - base)
                    part["cpus"].add(cpu)
        for case in cases:
            fd, floor_fd = case["lb"].prog.prog_fd, floors[case["floor"]].prog_fd
            for cpu in benchlib.round_cpus(ROUNDS):
                with on_cpu(cpu):
                    case["floor_ns"].append(mean_ns(floor_fd, case["packets"], [0]))
                    case["prog_ns"].append(mean_ns(fd, case["packets"], case["cursor"]))
                    case["cpus"].add(cpu)
                    if case["repeat"]:
                        pkt = case["packets"][0]
                        base = libbpf.prog_test_run(floor_fd, pkt, repeat=REPEAT).duration_ns
                        case["rep"].append(libbpf.prog_test_run(fd, pkt, repeat=REPEAT).duration_ns - base)
                    if case["drivers"]:
                        lb_driver, base_driver = case["drivers"]
                        pkt = case["packets"][0]
                        base = libbpf.prog_test_run(base_driver.prog_fd, pkt, repeat=NEW_FLOW_REPEAT).duration_ns
                        result = libbpf.prog_test_run(lb_driver.prog_fd, pkt, repeat=NEW_FLOW_REPEAT)
                        assert result.retval == 3, (case["family"], case["mode"], case["path"], result.retval)  # XDP_TX
                        case["rep"].append(result.duration_ns - base)
    for case in cases:
        path = case["path"]
        limit = [v for k, v in TARGETS.items() if path.startswith(k)]
        spec = ("<= %d ns above the floor" % limit[0], "above", "<=", limit[0]) if limit else None
        packet = "%s TCP %s, 74 bytes" % (case["family"], "SYN" if path == "SYN" else "ACK")
        if path == "non-VIP":
            packet += " to an address that is no VIP"
        elif path.startswith("new flow"):
            packet += ", a new 5-tuple on every call"
        params = {
            "VIPs x backends": case["tables"],
            "encapsulation": case["encap"],
            "backends": case["backends"],
            "VIPs": case["vips"],
            "cpus": sorted(case["cpus"]),
        }
        if case["rep"]:
            params["repeat: above floor"] = statistics.median(case["rep"])
        if path == "non-VIP":
            name = "%s %s" % (case["family"], path)
        else:
            name = "%s %s: %s" % (case["family"], case["mode"].upper(), path)
        row = bench.row(
            key,
            name,
            case["prog_ns"],
            "ns",
            {
                "method": "BPF_PROG_TEST_RUN, one call per packet, mean of the fastest 90 %% of %d" % CALLS,
                "packet": packet,
                "path": path,
                "encapsulation": case["encap"],
            },
            params,
            floor=case["floor_ns"],
            floor_name="XDP_%s floor" % case["floor"].upper(),
            target_spec=spec,
        )
        if limit and case["rep"]:  # the method the Katran anchors were measured with
            benchlib.add_target(row, "<= %d ns above the floor, repeat method" % limit[0], "repeat: above floor", limit[0], params["repeat: above floor"])
    for part in parts:
        bench.row(
            parts_key,
            "new-flow part: " + part["name"],
            part["prog_ns"],
            "ns",
            {
                "method": "BPF_PROG_TEST_RUN, one call per packet, mean of the fastest 90 %% of %d" % CALLS,
                "packet": "IPv4 TCP ACK, 74 bytes, a new 5-tuple on every call",
                "path": "one part of the new-flow path, alone",
                "encapsulation": "none",
            },
            {"cpus": sorted(part["cpus"]), "back to back: above floor": statistics.median(part["rep"])},
            floor=part["floor_ns"],
            floor_name="XDP_TX floor",
        )
        part["driver"].close()
        part["prog"].close()
    for prog in drivers_all:
        prog.close()
    for lb in lbs:
        lb.close()
    floor_pass.close()
    floor_tx.close()
    rows = bench.tables[key]["rows"]
    benchlib.print_table(rows, key)
    benchlib.print_table(bench.tables[parts_key]["rows"], parts_key)
    series = {}
    for row in rows:
        p = row["params"]
        if p["VIPs"] == 1 and "full" not in row["name"]:
            label = "%s, %s" % (row["includes"]["path"], row["includes"]["encapsulation"].split(" (")[0])
            series.setdefault(label, []).append((p["backends"], row["above"]))
    bench.plot(
        "lb_backends.png",
        "xdp_lb, 1 VIP: ns above the floor against backends",
        "backends of the VIP",
        "ns above the XDP floor",
        series,
        logx=True,
        hline=(100, "established target 100 ns"),
    )
    bench.write()


if __name__ == "__main__":
    main()
