"""Benchmark: recording a map's declared contents for the restore at boot (map_records.py), 1M LPM-trie keys.

Times what bpf_map adds to a run with a deployment record: writing the record of a uniform set (a plain list
of CIDRs, one value) and of distinct values, a sync that declares what is already recorded (nothing
rewritten), reading the record back (what the restore does), and a merge of one entry into 1M (read, rewrite).
Run by `make bench` after `make collection-link`; writes build/bench/map_records.json. Not a test.
"""

import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
from harness import paths  # noqa: E402

if paths.COLLECTIONS not in sys.path:
    sys.path.insert(0, paths.COLLECTIONS)

from ansible_collections.ebpf.fleet.plugins.module_utils.host import records  # noqa: E402
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_records  # noqa: E402

SIZE = benchlib.pick(10000, 1000000)
ROUNDS = benchlib.pick(1, 3)


def timed(func, rounds=1):
    """Seconds of each of `rounds` calls (rounds > 1 only for calls that leave the state as they found it)."""
    out = []
    for _round in range(rounds):
        start = time.perf_counter()
        func()
        out.append(time.perf_counter() - start)
    return out


def main():
    state_dir = tempfile.mkdtemp(prefix="ebpf_fleet_bench_records_")
    try:
        records.write_json(os.path.join(state_dir, "filter", records.RECORD_FILE), {"name": "filter"})
        one = (1).to_bytes(4, "little")
        uniform = {(32).to_bytes(4, "little") + n.to_bytes(4, "big"): one for n in range(SIZE)}
        distinct = {key: n.to_bytes(4, "little") for n, key in enumerate(uniform)}
        path = map_records.path_of(state_dir, "filter", "deny")

        def record(mode, entries):
            return lambda: map_records.update(state_dir, "filter", "deny", mode, entries, 8, 4, "lpm_trie")

        rows = [
            ("sync, uniform value (a plain list)", timed(record("sync", uniform)), os.path.getsize(path)),
            ("the same sync again (header compared)", timed(record("sync", uniform), ROUNDS), os.path.getsize(path)),
            ("read back (the restore)", timed(lambda: map_records.read(state_dir, "filter", "deny"), ROUNDS), os.path.getsize(path)),
            ("sync, distinct values", timed(record("sync", distinct)), os.path.getsize(path)),
            ("merge of 1 entry into the record", timed(record("merge", {next(iter(uniform)): one})), os.path.getsize(path)),
        ]
        bench = benchlib.Bench(
            "map_records",
            "Map sync: deployment records for the restore at boot",
            "What bpf_map adds to a run with a deployment record (map_records.py), in-process (tests/bench/bench_map_records.py).",
        )
        bench.table(
            "records",
            "record of %d LPM-trie entries" % SIZE,
            "Seconds of map_records calls in this process: the calls that change the record once, the "
            "others (a sync of the same set again, the read back) %d rounds." % ROUNDS,
            columns=["file bytes"],
        )
        for name, seconds, size in rows:
            bench.row(
                "records",
                name,
                seconds,
                "s",
                {"method": "map_records call in-process, wall seconds", "packet": "-", "path": name, "encapsulation": "-"},
                {"entries": SIZE, "file bytes": size},
            )
        benchlib.print_table(bench.tables["records"]["rows"])
        bench.write()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
