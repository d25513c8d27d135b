"""Benchmark: ebpf.fleet.bpf_map syncing 10k / 100k / 1M entries, against one bpftool command per entry.

For a hash (key fleet_ipv4_t) and an LPM trie (key struct fleet_lpm_v4) from
tests/bpf/map_types.c, fresh and empty for every size, it times:
  - bpf_map mode=sync from a plain-list file into the empty map (the whole module run, as Ansible runs it);
  - the same task again (a no-op: changed=false);
  - `bpftool map update pinned ... key ... value ...`, one process per entry, timed on a sample of
    SAMPLE entries and extrapolated to the size (how operators do it today).
It prints a table with ratios and the module's peak memory (ru_maxrss) for 1M entries.
Run by `make bench` after `make bpf collection-link`; not a test.
"""

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from harness import paths  # noqa: E402
from harness.runner import run_module  # noqa: E402

if paths.COLLECTIONS not in sys.path:
    sys.path.insert(0, paths.COLLECTIONS)

from ansible_collections.ebpf.fleet.plugins.module_utils import libbpf  # noqa: E402

SIZES = [10000, 100000, 1000000]
SAMPLE = 200
MAPS = [("hash", "deny_v4"), ("lpm_trie", "prefixes_v4")]
PIN_ROOT = "/sys/fs/bpf/ebpf_fleet_bench_%d" % os.getpid()


def addr(i):
    return "%d.%d.%d.%d" % (10 + (i >> 24), (i >> 16) & 255, (i >> 8) & 255, i & 255)


def cidr(i):
    return "%d.%d.%d.0/24" % (10 + (i >> 16), (i >> 8) & 255, i & 255)


def write_list(path, kind, count):
    fmt = addr if kind == "hash" else cidr
    with open(path, "w") as handle:
        handle.write("\n".join(fmt(i) for i in range(count)) + "\n")


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


def time_module(path, list_path):
    args = {"path": path, "entries_file": list_path, "value": "drop", "mode": "sync", "diff_limit": 10}
    start = time.perf_counter()
    res = run_module("bpf_map", args)
    elapsed = time.perf_counter() - start
    if res.failed:
        raise SystemExit("bpf_map failed: %s %s" % (res.get("msg"), res["_stderr"][-2000:]))
    return elapsed, res


def time_bpftool(bpftool, kind, path):
    value = ["1", "0", "0", "0"]
    start = time.perf_counter()
    for i in range(SAMPLE):
        subprocess.run([bpftool, "map", "update", "pinned", path, "key"] + bpftool_key(kind, i)
                       + ["value"] + value, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) / SAMPLE


def main():
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    work = tempfile.mkdtemp(prefix="bench_maps_")
    rows = []
    peak_mb = {}
    try:
        for kind, map_name in MAPS:
            obj, path = fresh_map(map_name, 0)
            per_entry = time_bpftool(bpftool, kind, path)
            obj.close()
            for size in SIZES:
                list_path = os.path.join(work, "%s_%d.txt" % (kind, size))
                write_list(list_path, kind, size)
                obj, path = fresh_map(map_name, size)
                try:
                    sync_s, res = time_module(path, list_path)
                    assert res.changed and res["counts"]["added"] == size
                    noop_s, res = time_module(path, list_path)
                    assert not res.changed
                    if size == SIZES[-1]:
                        peak_mb[kind] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
                finally:
                    obj.close()
                rows.append((kind, size, sync_s, noop_s, per_entry * size))
    finally:
        shutil.rmtree(PIN_ROOT, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    print("bpf_map sync of N entries from a plain list (whole module run), %d CPUs, kernel %s"
          % (os.cpu_count(), os.uname().release))
    print("| map | entries | sync from empty (s) | no-op re-run (s) | bpftool per entry, extrapolated (s) "
          "| bpftool / sync |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for kind, size, sync_s, noop_s, tool_s in rows:
        print("| %s | %d | %.2f | %.2f | %.0f | %.0fx |" % (kind, size, sync_s, noop_s, tool_s, tool_s / sync_s))
    print()
    print("bpftool: %d one-entry updates timed per map type, then extrapolated." % SAMPLE)
    for kind, mb in peak_mb.items():
        print("peak memory (ru_maxrss of the module processes) up to %d entries, %s: %.0f MiB" % (SIZES[-1], kind, mb))
    targets = [r for r in rows if r[1] == 1000000]
    for kind, size, sync_s, noop_s, tool_s in targets:
        print("targets %s 1M: sync <= 5 s: %s, no-op <= 2 s: %s, >= 50x bpftool: %s"
              % (kind, "met" if sync_s <= 5 else "MISSED", "met" if noop_s <= 2 else "MISSED",
                 "met" if tool_s / sync_s >= 50 else "MISSED"))


if __name__ == "__main__":
    main()
