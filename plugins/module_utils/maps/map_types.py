# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the collection knows about BPF map types, in one place.

Which types are per-CPU, arrays, maps of maps, which take batch operations,
how big one element's value is as the syscalls read it (per-CPU values are
padded to 8 bytes and repeated for every possible CPU), and how a whole map is
read (one batch lookup where the type has it, one element at a time
otherwise). map_codec, map_sync, bpf_inventory and bcc_load take these from
here instead of keeping their own copies.
"""

from __future__ import annotations

import ctypes
import errno

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf

PERCPU = libbpf.PERCPU_MAP_TYPES
# elements are fds of other kernel objects (programs, maps, cgroups, perf events): written as fds, read as ids
FD_VALUE = frozenset({"prog_array", "array_of_maps", "hash_of_maps", "perf_event_array", "cgroup_array"})
DEVICE = frozenset({"devmap", "devmap_hash"})
# keys are indexes 0 .. max_entries - 1
ARRAY = frozenset({"array", "percpu_array", "prog_array", "perf_event_array", "cgroup_array", "array_of_maps", "devmap", "cpumap", "xskmap"})
# elements exist from creation on and cannot be deleted: "absent" means all-zero there
UNDELETABLE = frozenset({"array", "percpu_array"})
OUTER = frozenset({"array_of_maps", "hash_of_maps"})
# evict on their own when full (a declaration larger than max_entries is not an error for them)
LRU = frozenset({"lru_hash", "lru_percpu_hash"})
BATCH_LOOKUP = frozenset({"hash", "lru_hash", "percpu_hash", "lru_percpu_hash", "array", "percpu_array", "lpm_trie"})
BATCH_UPDATE = BATCH_LOOKUP
BATCH_DELETE = frozenset({"hash", "lru_hash", "percpu_hash", "lru_percpu_hash", "lpm_trie"})
# no key/value contents to read (streams, program tables, maps of maps as a whole)
NO_DATA = frozenset({"prog_array", "perf_event_array", "ringbuf", "user_ringbuf", "array_of_maps", "hash_of_maps"})
# what bpf_map can manage
MANAGED = frozenset(
    {
        "hash",
        "lru_hash",
        "percpu_hash",
        "lru_percpu_hash",
        "array",
        "percpu_array",
        "lpm_trie",
        "prog_array",
        "devmap",
        "devmap_hash",
        "array_of_maps",
        "hash_of_maps",
    }
)


def per_cpu_stride(value_size: int) -> int:
    """The size of one CPU's copy of a per-CPU value (padded to 8 bytes)."""
    return (value_size + 7) // 8 * 8


def value_buf_size(map_type: str, value_size: int, ncpus: int = 0) -> int:
    """The size of one element's value as lookups and updates read and write it."""
    if map_type not in PERCPU:
        return value_size
    return per_cpu_stride(value_size) * (ncpus or libbpf.num_possible_cpus())


def read_all(map_fd: int, info: dict, ncpus: int = 0):
    """Every element of a map as (keys, values, count): two bytes objects of count elements of key_size and
    value_buf_size each. One batch lookup where the map type has it, one element at a time otherwise."""
    key_size = info["key_size"]
    vsize = value_buf_size(info["type"], info["value_size"], ncpus)
    if info["type"] in BATCH_LOOKUP:
        try:
            return libbpf.map_lookup_batch(map_fd, key_size, vsize, max(info["max_entries"], 1))
        except libbpf.BpfError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP, 524):
                raise
    keys, values = [], []
    for key in libbpf.map_keys(map_fd, key_size):
        value = libbpf.map_lookup(map_fd, key, vsize)
        if value is None:
            continue
        keys.append(key)
        values.append(value)
    return b"".join(keys), b"".join(values), len(keys)


def read_array_range(map_fd: int, first: int, count: int, value_size: int) -> bytes:
    """The values of keys first .. first + count - 1 of an array (not per-CPU), read with batch lookups that
    start at `first`; raises BpfError when the kernel refuses or the array ends before."""
    keys = ctypes.create_string_buffer(4 * count)
    values = ctypes.create_string_buffer(value_size * count)
    opts = libbpf.MapBatchOpts(sz=ctypes.sizeof(libbpf.MapBatchOpts), elem_flags=0, flags=0)
    parts, got = [], 0
    cursor = first - 1  # a batch starts after the key in its token (none: at key 0)
    while got < count:
        want = ctypes.c_uint32(count - got)
        token_in = ctypes.c_uint64(cursor)  # an array's cursor is a key: room for any key size
        token_out = ctypes.c_uint64(0)
        ret = libbpf.lib().bpf_map_lookup_batch(
            map_fd, None if cursor < 0 else ctypes.byref(token_in), ctypes.byref(token_out), keys, values, ctypes.byref(want), ctypes.byref(opts)
        )
        if ret < 0 and ret != -errno.ENOENT:
            raise libbpf.BpfError("batch lookup of keys %d..%d" % (first, first + count - 1), -ret)
        n = want.value
        parts.append(values.raw[: value_size * n])
        got += n
        cursor += n
        if ret == -errno.ENOENT or not n:
            break
    data = b"".join(parts)
    if len(data) != value_size * count:
        raise libbpf.BpfError(
            "batch lookup of keys %d..%d" % (first, first + count - 1), errno.ERANGE, "the array holds only %d of them" % (len(data) // value_size)
        )
    return data
