"""Benchmark: ebpf.fleet.bpf_map syncing 10k / 100k / 1M entries, against one bpftool command per entry.

For a hash (key fleet_ipv4_t) and an LPM trie (key struct fleet_lpm_v4) from tests/bpf/map_types.c, fresh
and empty for every size, it times the whole module run (as Ansible runs it, one process):
  - bpf_map mode=sync from a plain-list file into the empty map;
  - the same task again (a no-op: changed=false), several rounds;
  - a 1 % change (1 % of the entries replaced by others), alternating between the two lists, several rounds;
  - `bpftool map update pinned ... key ... value ...`, one process per entry, timed on a sample of SAMPLE
    entries per round and extrapolated to the size (how operators do it without the module);
and the peak memory (maximum resident set) of each module run.
Run by `make bench` after `make bpf collection-link`; writes build/bench/maps.json. Not a test.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
from harness import paths  # noqa: E402
from harness.runner import run_module  # noqa: E402

if paths.COLLECTIONS not in sys.path:
    sys.path.insert(0, paths.COLLECTIONS)

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf  # noqa: E402

SIZES = benchlib.pick([2000], [10000, 100000, 1000000])
SAMPLE = benchlib.pick(20, 200)
ROUNDS = benchlib.pick(1, 3)
MAPS = benchlib.pick([("hash", "deny_v4")], [("hash", "deny_v4"), ("lpm_trie", "prefixes_v4")])
PIN_ROOT = "/sys/fs/bpf/ebpf_fleet_bench_%d" % os.getpid()
# a wrapper interpreter: runs the module and writes its peak resident set (KiB) to the file in BENCH_RSS_FILE
RSS_WRAPPER = """import os, resource, subprocess, sys
proc = subprocess.run([%r] + sys.argv[1:])
with open(os.environ["BENCH_RSS_FILE"], "w") as handle:
    handle.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(proc.returncode)
"""


def addr(i):
    return "%d.%d.%d.%d" % (10 + (i >> 24), (i >> 16) & 255, (i >> 8) & 255, i & 255)


def cidr(i):
    return "%d.%d.%d.0/24" % (10 + (i >> 16), (i >> 8) & 255, i & 255)


def write_list(path, kind, indexes):
    fmt = addr if kind == "hash" else cidr
    with open(path, "w") as handle:
        handle.write("\n".join(fmt(i) for i in indexes) + "\n")


def bpftool_key(kind, i):
    if kind == "hash":
        data = socket.inet_aton(addr(i))
    else:
        data = (24).to_bytes(4, "little") + socket.inet_aton(cidr(i).split("/")[0])
    return ["%d" % b for b in data]


def fresh_map(map_name, size):
    """A newly loaded object's map pinned at <PIN_ROOT>/bench<size>/maps/<map>; returns (object, path)."""
    obj = libbpf.BpfObject.open(paths.bpf_object("map_types"))
    obj.load()
    path = os.path.join(PIN_ROOT, "b%s%d" % (map_name, size), "maps", map_name)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    libbpf.obj_pin(obj.map(map_name).fd, path)
    return obj, path


def time_module(path, list_path, wrapper):
    """(wall seconds, result, peak resident MiB) of one bpf_map run."""
    args = {"path": path, "entries_file": list_path, "value": "drop", "mode": "sync", "diff_limit": 10}
    rss_file = wrapper + ".rss"
    os.environ["BENCH_RSS_FILE"] = rss_file
    start = time.perf_counter()
    res = run_module("bpf_map", args, python=wrapper)
    elapsed = time.perf_counter() - start
    if res.failed:
        raise SystemExit("bpf_map failed: %s %s" % (res.get("msg"), res["_stderr"][-2000:]))
    with open(rss_file) as handle:
        peak = int(handle.read()) / 1024.0
    return elapsed, res, peak


def time_bpftool(bpftool, kind, path):
    value = ["1", "0", "0", "0"]
    start = time.perf_counter()
    for i in range(SAMPLE):
        subprocess.run([bpftool, "map", "update", "pinned", path, "key"] + bpftool_key(kind, i) + ["value"] + value, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) / SAMPLE


def main():
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    work = tempfile.mkdtemp(prefix="bench_maps_")
    wrapper = os.path.join(work, "python_rss")
    with open(wrapper, "w") as handle:
        handle.write("#!%s\n" % sys.executable + RSS_WRAPPER % paths.PYTHON)
    os.chmod(wrapper, 0o755)
    bench = benchlib.Bench(
        "maps",
        "Map sync: ebpf.fleet.bpf_map",
        "Whole bpf_map module runs (one process, as Ansible runs it) syncing a plain list into "
        "a pinned map, beside one bpftool process per entry (tests/bench/bench_maps.py).",
    )
    key = "map_sync"
    bench.table(
        key,
        "bpf_map sync of N entries (hash of IPv4 addresses, LPM trie of /24 prefixes)",
        "Wall seconds of the whole module run. From empty: once per size and map (a fresh map). No-op: the "
        "same list again, %d rounds. 1 %% change: 1 %% of the entries replaced by others, alternating "
        "between the two lists, %d rounds. bpftool: %d one-entry `bpftool map update` processes per round, "
        "%d rounds, the mean per entry extrapolated to the size. Peak memory: the maximum resident set of "
        "the module process." % (ROUNDS, ROUNDS, SAMPLE, ROUNDS),
        columns=["map", "entries", "peak MiB"],
    )
    try:
        for kind, map_name in MAPS:
            obj, path = fresh_map(map_name, 0)
            per_entry = []
            for _round in range(ROUNDS):
                per_entry.append(time_bpftool(bpftool, kind, path))
            obj.close()
            for size in SIZES:
                base = list(range(size))
                changed = base[size // 100 :] + list(range(size, size + size // 100))
                lists = []
                for name, indexes in (("base", base), ("changed", changed)):
                    list_path = os.path.join(work, "%s_%d_%s.txt" % (kind, size, name))
                    write_list(list_path, kind, indexes)
                    lists.append(list_path)
                obj, path = fresh_map(map_name, size)
                includes = {
                    "method": "ansible module run (subprocess), wall seconds",
                    "packet": "-",
                    "path": "bpf_map mode=sync, entries_file (plain list), value drop",
                    "encapsulation": "-",
                }
                params = {"map": kind, "entries": size}
                try:
                    sync_s, res, peak = time_module(path, lists[0], wrapper)
                    assert res.changed and res["counts"]["added"] == size
                    extrapolated = [p * size for p in per_entry]
                    big = size == 1000000
                    bench.row(
                        key,
                        "sync from empty",
                        [sync_s],
                        "s",
                        includes,
                        dict(params, **{"peak MiB": peak}),
                        target_spec=("<= 5 s for 1M", "median", "<=", 5) if big else None,
                    )
                    noop, peaks = [], [peak]
                    for _round in range(ROUNDS):
                        secs, res, peak = time_module(path, lists[0], wrapper)
                        assert not res.changed
                        noop.append(secs)
                        peaks.append(peak)
                    change = []
                    for index in range(ROUNDS):
                        secs, res, peak = time_module(path, lists[1 - index % 2], wrapper)
                        assert res.changed
                        change.append(secs)
                        peaks.append(peak)
                    bench.row(
                        key,
                        "no-op re-run",
                        noop,
                        "s",
                        includes,
                        dict(params, **{"peak MiB": max(peaks[1:])}),
                        target_spec=("<= 2 s for 1M", "median", "<=", 2) if big else None,
                    )
                    bench.row(
                        key,
                        "1 % change",
                        change,
                        "s",
                        includes,
                        dict(params, **{"peak MiB": max(peaks)}),
                        target_spec=("<= 2 s for 1M", "median", "<=", 2) if big else None,
                    )
                    row = bench.row(
                        key,
                        "bpftool, one process per entry (extrapolated)",
                        extrapolated,
                        "s",
                        {
                            "method": "one `bpftool map update pinned` per entry, %d sampled per round, extrapolated" % SAMPLE,
                            "packet": "-",
                            "path": "bpftool map update",
                            "encapsulation": "-",
                        },
                        params,
                        floor=[sync_s] * ROUNDS,
                        floor_name="bpf_map sync from empty",
                        ratio_against="bpf_map sync from empty",
                    )
                    if big:
                        benchlib.add_target(row, ">= 50 x slower than bpf_map (sync from empty)", "ratio", 50, row["ratio"]["value"], ">=")
                finally:
                    obj.close()
                    shutil.rmtree(os.path.dirname(os.path.dirname(path)), ignore_errors=True)
    finally:
        shutil.rmtree(PIN_ROOT, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    rows = bench.tables[key]["rows"]
    benchlib.print_table(rows, key)
    series = {}
    for row in rows:
        series.setdefault("%s, %s" % (row["params"]["map"], row["name"]), []).append((row["params"]["entries"], row["median"]))
    bench.plot("map_sync.png", "bpf_map sync: wall seconds against entries", "entries", "seconds (log)", series, logx=True)
    bench.data["plots"][-1]["logy"] = True
    bench.write()


if __name__ == "__main__":
    main()
