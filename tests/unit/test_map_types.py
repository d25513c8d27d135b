"""The map-type facts (which types are per-CPU, arrays, batchable; per-CPU value sizing; whole-map reads) live in
map_types only: no other module_utils file keeps its own copy."""

import os
import re

from harness import paths

from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_types

MODULE_UTILS = os.path.join(paths.REPO, "plugins", "module_utils")
OWNERS = {"map_types.py", "libbpf.py"}  # libbpf names the kernel's map types and wraps the syscalls
COPIES = [
    (re.compile(r"frozenset\(\{[^}]*\"(percpu_array|lru_hash|array_of_maps|prog_array|lpm_trie)\""), "a set of map types"),
    (re.compile(r"= \(\s*\"(prog_array|perf_event_array|ringbuf)\"\s*,"), "a tuple of map types"),
    (re.compile(r"\+ 7\) // 8"), "per-CPU value sizing"),
    (re.compile(r"map_lookup_batch\(|map_keys\("), "a whole-map read"),
    (re.compile(r"num_possible_cpus\(\)\s*(\*|if)"), "per-CPU value sizing"),
]


def test_map_type_facts_are_kept_in_map_types_only():
    found = []
    names = sorted(os.path.relpath(os.path.join(top, name), MODULE_UTILS) for top, _dirs, files in os.walk(MODULE_UTILS) for name in files)
    assert "maps/map_types.py" in names
    for name in names:
        if not name.endswith(".py") or os.path.basename(name) in OWNERS:
            continue
        with open(os.path.join(MODULE_UTILS, name), encoding="utf-8") as handle:
            for num, line in enumerate(handle, 1):
                for pattern, what in COPIES:
                    if pattern.search(line):
                        found.append("%s:%d: %s: %s" % (name, num, what, line.strip()))
    assert not found, "\n".join(found)


def test_per_cpu_value_size_is_padded_to_8_bytes_per_possible_cpu():
    assert map_types.value_buf_size("hash", 12, 4) == 12
    assert map_types.value_buf_size("percpu_array", 12, 4) == 64
    assert map_types.value_buf_size("lru_percpu_hash", 16, 3) == 48
    assert map_types.UNDELETABLE <= map_types.ARRAY and map_types.OUTER <= map_types.MANAGED
