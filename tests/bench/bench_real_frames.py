"""Benchmark of real frames (run by `make bench`; not a test). Writes build/bench/real_frames.json.

CPU time per dropped frame on the receiving CPU for four ways of dropping the same live-frame traffic:
the XDP filter (xdp_filter, native XDP), nftables at netdev ingress, nftables at prerouting, and a user-space
filter reading a packet socket (Python). The frames cross a veth pair between two namespaces made here; the
receiving veth runs threaded NAPI, its NAPI kthread pinned to one CPU (the receiving CPU) and the generator to the
other, so the generator's cost stays outside the figure.

- Generator: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES running an XDP_TX program on the sending veth
  (each frame really crosses to the peer), paced: bursts of BURST frames at a fixed offered rate, the same for every
  variant and well below each one's saturation (the share of sent frames each variant dropped is in its row).
- CPU time: the on-CPU time (/proc/<pid>/schedstat) of the receiving veth's NAPI kthread over the window, plus, for
  the user-space filter, its process's (pinned to the same CPU), minus the same threads' time over an idle window
  of the same length in the same round; divided by the frames the variant dropped (its own counter). The receiving
  CPU's busy time from /proc/stat over the window minus an idle window is kept beside it, as a cross-check that
  other work on the shared machine blurs.
- A trivial XDP_DROP program is measured the same way (the floor: the veth driver's and NAPI's own work).
- Rounds interleave the variants (their order rotates every round).
- The raw drop-rate table: the same variants under an unpaced send (the generator as fast as it goes), dropped
  frames per second of sending; the generator or the veth ring bounds these, not the filter.

    .venv/bin/python tests/bench/bench_real_frames.py [--quick]     (BENCH_QUICK=1 as --quick)
"""

import argparse
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, TESTS)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(TESTS, "integration", "dataplane"))

import benchlib  # noqa: E402
from harness import paths  # noqa: E402
from harness.cpus import cpus  # noqa: E402

if paths.COLLECTIONS not in sys.path:
    sys.path.insert(0, paths.COLLECTIONS)

from dataplane_lab import attach, entered  # noqa: E402
from filter_fixture import Filter  # noqa: E402
from harness.netns import NetnsFactory  # noqa: E402
from harness.progtest import LoadedProgram, xdp_md  # noqa: E402
from packets import IP, UDP, raw  # noqa: E402

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf  # noqa: E402

RX_IF = "rfx"  # the receiving veth (its NAPI kthread is napi/rfx-<id>)
TX_IF = "tfx"
SRC, DST = "203.0.113.66", "203.0.113.77"  # DST is not the receiver's address: a frame the stack gets is dropped
RX_ADDR, TX_ADDR = "203.0.113.2/24", "203.0.113.1/24"  # at routing (no forwarding), without an ICMP answer
BURST = 256  # frames per generator call (the veth ring holds 256)
RULE_ID = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")

VARIANTS = {
    "floor": ("XDP_DROP floor (trivial program)", "NAPI kthread: veth ring -> a program that drops every frame (the driver's own per-frame work)"),
    "xdp": ("XDP filter (xdp_filter, native XDP)", "NAPI kthread: veth ring -> xdp_filter (stride-table source rule) -> XDP_DROP"),
    "nft_ingress": ("nftables, netdev ingress", "NAPI kthread: veth ring -> skb, GRO -> netdev ingress hook: ip saddr ... counter drop"),
    "nft_prerouting": ("nftables, prerouting (priority raw)", "NAPI kthread: veth ring -> skb, GRO -> ip_rcv -> prerouting hook: ip saddr ... counter drop"),
    "user": (
        "user space (AF_PACKET socket, Python)",
        "NAPI kthread: veth ring -> skb, GRO -> packet socket queue (the stack then drops the frame at "
        "routing); plus the filter process on the same CPU: recv, match the source, count",
    ),
}

# The user-space filter: a packet socket on the receiving veth read by Python; SIGUSR1 prints "matched seen".
USER_FILTER = r"""
import os, signal, socket, sys
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
sock.bind((sys.argv[1], 0))
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
needle = bytes.fromhex(sys.argv[2])
counts = [0, 0]
signal.signal(signal.SIGUSR1, lambda *_: os.write(1, b"%d %d\n" % (counts[0], counts[1])))
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
os.write(1, b"ready\n")
recv = sock.recv
while True:
    data = recv(2048)
    counts[1] += 1
    if data[26:30] == needle:
        counts[0] += 1
"""


# ---------------------------------------------------------------- CPU time


def napi_threads() -> list:
    """Pids of the receiving veth's NAPI kthreads (napi/<ifname>-<napi id>)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % name) as handle:
                comm = handle.read().strip()
        except OSError:
            continue
        if comm.startswith("napi/%s-" % RX_IF):
            found.append(int(name))
    return sorted(found)


def on_cpu_ns(pid: int) -> int:
    with open("/proc/%d/schedstat" % pid) as handle:
        return int(handle.read().split()[0])


def cpu_busy_ns(cpu: int) -> int:
    """Busy time of one CPU from /proc/stat (everything but idle and iowait), in ns (tick resolution)."""
    with open("/proc/stat") as handle:
        for line in handle:
            if line.startswith("cpu%d " % cpu):
                fields = [int(f) for f in line.split()[1:]]
                return (sum(fields[:8]) - fields[3] - fields[4]) * 1_000_000_000 // CLK_TCK
    raise RuntimeError("cpu%d not in /proc/stat" % cpu)


class Meter:
    """On-CPU time of a set of threads and busy time of one CPU between start() and stop()."""

    def __init__(self, pids: list, cpu: int):
        self.pids, self.cpu = list(pids), cpu

    def start(self):
        self.t0 = {pid: on_cpu_ns(pid) for pid in self.pids}
        self.busy0 = cpu_busy_ns(self.cpu)
        self.wall0 = time.perf_counter()

    def stop(self) -> dict:
        """The figures of the window; ThreadGone when a thread measured ended during it (a NAPI kthread that the
        kernel restarted late after an attach): its time is lost, so the window must be measured again."""
        try:
            threads = sum(on_cpu_ns(pid) - t for pid, t in self.t0.items())
        except FileNotFoundError as exc:
            raise ThreadGone(exc.filename) from exc
        return {"threads_ns": threads, "busy_ns": cpu_busy_ns(self.cpu) - self.busy0, "wall_s": time.perf_counter() - self.wall0}


class ThreadGone(RuntimeError):
    """A thread a Meter measured ended during its window."""


# ---------------------------------------------------------------- the rig


class Rig:
    """Two namespaces, a veth pair, threaded NAPI on the receiving end, the generator."""

    def __init__(self, gen_cpu: int, rx_cpu: int):
        from scapy.layers.l2 import Ether  # pylint: disable=import-outside-toplevel

        self.gen_cpu, self.rx_cpu = gen_cpu, rx_cpu
        self.factory = NetnsFactory()
        self.tx, self.rx = self.factory("rft"), self.factory("rfr")
        self.tx.veth(TX_IF, RX_IF, peer_ns=self.rx, addr_a=TX_ADDR, addr_b=RX_ADDR)
        # GRO on: veth runs NAPI without an XDP program, so every variant has the same receive path and thread
        self.rx.run(["ethtool", "-K", RX_IF, "gro", "on"])
        # the namespace's own sysfs (`ip netns exec` mounts it); no bpffs is needed there
        subprocess.run(["ip", "netns", "exec", self.rx.name, "sh", "-c", "echo 1 > /sys/class/net/%s/threaded" % RX_IF], check=True, capture_output=True)
        mac = [item for item in self.rx.links() if item["ifname"] == RX_IF][0]["address"]
        self.frame = raw(Ether(dst=mac) / IP(src=SRC, dst=DST) / UDP(sport=1234, dport=9)).ljust(60, b"\0")
        self.gen = LoadedProgram(paths.bpf_object("floor_xdp_tx"), "floor_xdp_tx")
        with entered(self.tx):
            self.ctx = xdp_md(len(self.frame), socket.if_nametoindex(TX_IF))

    def pin(self) -> list:
        """Pin the receiving NAPI kthreads to the receiving CPU; their pids."""
        pids = napi_threads()
        if not pids:
            raise RuntimeError("no napi/%s-* kthread: threaded NAPI did not start" % RX_IF)
        for pid in pids:
            os.sched_setaffinity(pid, {self.rx_cpu})
        return pids

    def _send(self, count: int):
        libbpf.prog_test_run(self.gen.prog_fd, self.frame, repeat=count, ctx=self.ctx, flags=libbpf.BPF_F_TEST_XDP_LIVE_FRAMES, batch_size=64)

    def paced(self, rate: float, secs: float) -> int:
        """Send bursts of BURST frames at `rate` frames per second for secs; the frames sent."""
        interval = BURST / rate
        sent = 0
        with entered(self.tx):
            start = time.perf_counter()
            deadline = start + secs
            slot = start
            while slot < deadline:
                self._send(BURST)
                sent += BURST
                slot += interval
                pause = slot - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
        return sent

    def blast(self, count: int) -> float:
        """count frames as fast as the generator goes; the seconds it took."""
        with entered(self.tx):
            start = time.perf_counter()
            self._send(count)
            return time.perf_counter() - start

    def nft(self, *args, stdin=None) -> str:
        return self.rx.run(["nft"] + list(args), input=stdin).stdout

    def close(self):
        self.gen.close()
        self.factory.delete_all()


class Variant:
    """One way of dropping SRC on the receiving side: set up, count what it dropped, take down."""

    def __init__(self, rig: Rig, kind: str):
        self.rig, self.kind = rig, kind
        self.extra_pids = []

    def __enter__(self):
        rig = self.rig
        if self.kind == "floor":
            self.prog = LoadedProgram(paths.bpf_object("floor_xdp_drop"), "floor_xdp_drop")
            self.link = attach(rig.rx, self.prog.prog_fd, RX_IF, libbpf.ATTACH_XDP)
        elif self.kind == "xdp":
            self.flt = Filter()
            self.flt.configure(default_verdict="pass")
            self.flt.fill("filter_v4", self.flt.stride_entries({SRC: ("drop", RULE_ID)}))
            self.link = attach(rig.rx, self.flt.prog_fd, RX_IF, libbpf.ATTACH_XDP)
        elif self.kind == "nft_ingress":
            rig.nft(
                "-f",
                "-",
                stdin="table netdev rfbench {\n chain c {\n  type filter hook ingress device %s "
                "priority 0; policy accept;\n  ip saddr %s counter drop\n }\n}\n" % (RX_IF, SRC),
            )
        elif self.kind == "nft_prerouting":
            rig.nft(
                "-f",
                "-",
                stdin="table ip rfbench {\n chain c {\n  type filter hook prerouting priority raw; policy accept;\n  ip saddr %s counter drop\n }\n}\n" % SRC,
            )
        else:
            cmd = ["nsenter", "--net=%s" % rig.rx.path, "taskset", "-c", str(rig.rx_cpu), sys.executable, "-c", USER_FILTER, RX_IF, socket.inet_aton(SRC).hex()]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
            line = self.proc.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError("the user-space filter did not start: %r" % line)
            self.extra_pids = [self.proc.pid]  # nsenter and taskset exec: the pid is the filter's
        return self

    def dropped(self) -> int:
        if self.kind == "floor":
            stats = self.rig.rx.run(["ethtool", "-S", RX_IF]).stdout
            return sum(
                int(line.split(":")[1])
                for line in stats.splitlines()
                if line.strip().startswith("rx_queue_") and line.split(":")[0].strip().endswith("_xdp_drops")
            )
        if self.kind == "xdp":
            return self.flt.percpu_u64_sums("filter_rule_stats", struct.pack("<I", RULE_ID))[0]
        if self.kind.startswith("nft"):
            family = "netdev" if self.kind == "nft_ingress" else "ip"
            ruleset = json.loads(self.rig.nft("-j", "list", "table", family, "rfbench"))
            exprs = [item["rule"]["expr"] for item in ruleset["nftables"] if "rule" in item][0]
            return [expr["counter"]["packets"] for expr in exprs if "counter" in expr][0]
        self.proc.send_signal(signal.SIGUSR1)
        return int(self.proc.stdout.readline().split()[0])

    def settle(self, wait: float = 0.1, tries: int = 30) -> int:
        """The dropped count once it stopped growing (the user-space filter may still read its queue)."""
        last = self.dropped()
        for _try in range(tries):
            time.sleep(wait)
            now = self.dropped()
            if now == last:
                return now
            last = now
        return last

    def __exit__(self, *exc):
        if self.kind == "floor":
            os.close(self.link)
            self.prog.close()
        elif self.kind == "xdp":
            os.close(self.link)
            self.flt.close()
        elif self.kind.startswith("nft"):
            self.rig.nft("delete", "table", "netdev" if self.kind == "nft_ingress" else "ip", "rfbench")
        else:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        return False


# ---------------------------------------------------------------- rounds


def one_round(rig: Rig, order: list, args) -> dict:
    """Idle window, then each variant's paced window and an unpaced blast; per variant the figures."""
    out = {}
    napi = rig.pin()
    idle = Meter(napi, rig.rx_cpu)
    idle.start()
    time.sleep(args.window)
    out["idle"] = idle.stop()
    for kind in order:
        with Variant(rig, kind) as var:
            for attempt in range(3):
                napi = rig.pin()  # (an XDP attach may restart NAPI: pin again, measure what runs now)
                meter = Meter(napi + var.extra_pids, rig.rx_cpu)
                before = var.dropped()  # nothing in flight: the previous variant's frames were all handled
                meter.start()
                sent = rig.paced(args.rate, args.window)
                # the window ends when the receiver has handled what was sent (the user-space filter's queue)
                after = var.settle(0.05)
                try:
                    figures = meter.stop()
                    break
                except ThreadGone:
                    if attempt == 2:
                        raise
            figures.update(sent=sent, dropped=after - before)
            before = after
            secs = rig.blast(args.blast)
            after = var.settle()
            figures.update(blast_sent=args.blast, blast_secs=secs, blast_dropped=after - before)
            out[kind] = figures
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="as BENCH_QUICK=1: short windows, two rounds")
    args = parser.parse_args()
    quick = args.quick or benchlib.QUICK
    # full: about 4 minutes on this 2-CPU machine at load 12-20 (a 2 s window x 5 rounds took 6.4 minutes there)
    args.rounds = 2 if quick else 4
    args.window = 0.5 if quick else 1.5
    args.rate = 50_000.0
    args.blast = 100_000 if quick else 300_000
    if os.geteuid() != 0:
        sys.exit("needs root (BPF, namespaces)")
    bench = benchlib.Bench(
        "real_frames",
        "Real frames: CPU time per dropped frame",
        "The XDP filter, nftables (netdev ingress and prerouting) and a user-space packet-socket "
        "filter dropping the same live-frame traffic on a veth pair, each measured as CPU time per "
        "dropped frame on the receiving CPU (tests/bench/bench_real_frames.py).",
    )
    allowed = cpus()
    if len(allowed) < 2:
        bench.not_measured("Real frames, CPU time per frame", "needs 2 CPUs (generator and receiver apart)")
        bench.write()
        return
    gen_cpu, rx_cpu = allowed[0], allowed[1]
    saved = os.sched_getaffinity(0)
    kinds = list(VARIANTS)
    rounds = []
    rig = None
    try:
        os.sched_setaffinity(0, {gen_cpu})
        rig = Rig(gen_cpu, rx_cpu)
        for number in range(args.rounds):
            order = kinds[number % len(kinds) :] + kinds[: number % len(kinds)]
            rounds.append(one_round(rig, order, args))
            print(
                "round %d: %s"
                % (number + 1, ", ".join("%s %.0f ns/frame" % (k, rounds[-1][k]["threads_ns"] / max(rounds[-1][k]["dropped"], 1)) for k in kinds)),
                flush=True,
            )
    finally:
        os.sched_setaffinity(0, saved)
        if rig is not None:
            rig.close()

    def per_frame(rnd, kind, field):
        """ns per dropped frame in one round: the window's time minus the idle window's, scaled to its length."""
        fig, idle = rnd[kind], rnd["idle"]
        return max(fig[field] - idle[field] * fig["wall_s"] / idle["wall_s"], 0) / max(fig["dropped"], 1)

    key = "real_frames_cpu"
    bench.table(
        key,
        "CPU time per dropped frame on the receiving CPU",
        "Offered load %.0f frames/s in bursts of %d (the same for every variant), %.1f s windows, %d rounds "
        "with the variants interleaved; generator (live-frames XDP_TX on %s) on CPU %d, the receiving veth "
        "%s's threaded NAPI kthread (and the user-space filter) on CPU %d. The figure is the on-CPU time of "
        "those threads (schedstat) over the window, minus the same over an idle window of the round, per "
        "frame the variant dropped; `/proc/stat ns` is the receiving CPU's busy time the same way (other "
        "work on the shared CPU lands in it too). The ratio is against the XDP filter in the same round; `ratio beyond "
        "the floor` takes the XDP_DROP floor (the veth driver's and NAPI's own per-frame work, which every "
        "variant pays) out of both sides." % (args.rate, BURST, args.window, args.rounds, TX_IF, gen_cpu, RX_IF, rx_cpu),
        columns=["dropped share", "/proc/stat ns", "ratio beyond the floor"],
    )
    xdp = [per_frame(rnd, "xdp", "threads_ns") for rnd in rounds]
    floor = [per_frame(rnd, "floor", "threads_ns") for rnd in rounds]
    targets = {"nft_ingress": 4, "nft_prerouting": 4, "user": 20}
    for kind in kinds:
        name, path = VARIANTS[kind]
        samples = [per_frame(rnd, kind, "threads_ns") for rnd in rounds]
        params = {
            "cpus": [rx_cpu],
            "offered frames/s": args.rate,
            "dropped share": statistics.median(rnd[kind]["dropped"] / rnd[kind]["sent"] for rnd in rounds),
            "/proc/stat ns": statistics.median(per_frame(rnd, kind, "busy_ns") for rnd in rounds),
        }
        includes = {
            "method": "live frames (XDP_TX generator, paced) over veth; schedstat of the receiving CPU's threads minus an idle window",
            "packet": "60-byte IPv4 UDP, one source",
            "path": path,
            "encapsulation": "none",
        }
        if kind in ("floor", "xdp"):
            bench.row(key, name, samples, "ns", includes, params)
            continue
        # the same ratio with the driver's own per-frame work (the floor) taken out of both sides
        params["ratio beyond the floor"] = statistics.median((s - f) / max(x - f, 1.0) for s, x, f in zip(samples, xdp, floor))
        spec = ("at least %d x the XDP filter's CPU per frame" % targets[kind], "ratio", ">=", targets[kind])
        bench.row(key, name, samples, "ns", includes, params, floor=xdp, floor_name="XDP filter", ratio_against="XDP filter", target_spec=spec)

    raw_key = "real_frames_rate"
    bench.table(
        raw_key,
        "Raw drop rate, unpaced (the generator as fast as it goes)",
        "%d frames per round sent in one live-frames run; dropped frames per second of sending, in Mpps. The "
        "generator, the veth ring (frames it cannot take are lost before the receiver) and the receiving "
        "CPU's share of a loaded machine bound these figures: read them as what each variant kept up with, "
        "not as its cost (the table above is the cost)." % args.blast,
        columns=["dropped share"],
    )
    for kind in kinds:
        name, path = VARIANTS[kind]
        samples = [rnd[kind]["blast_dropped"] / rnd[kind]["blast_secs"] / 1e6 for rnd in rounds]
        bench.row(
            raw_key,
            name,
            samples,
            "Mpps",
            {
                "method": "live frames (XDP_TX generator, unpaced) over veth; the variant's own drop counter",
                "packet": "60-byte IPv4 UDP, one source",
                "path": path,
                "encapsulation": "none",
            },
            {"cpus": [rx_cpu], "dropped share": statistics.median(rnd[kind]["blast_dropped"] / rnd[kind]["blast_sent"] for rnd in rounds)},
        )
    bench.plot(
        "real_frames_cpu.png",
        "CPU time per dropped frame on the receiving CPU, by round",
        "round",
        "ns of CPU per dropped frame (log)",
        {VARIANTS[kind][0]: [(i + 1, per_frame(rnd, kind, "threads_ns")) for i, rnd in enumerate(rounds)] for kind in kinds},
        logy=True,
    )
    for name in (key, raw_key):
        benchlib.print_table(bench.tables[name]["rows"], name)
    bench.write()


if __name__ == "__main__":
    main()
