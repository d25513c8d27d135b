# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's one door to the bpf() syscall: Debian's libbpf through ctypes.

libbpf (package ``libbpf1``) already does ELF parsing, relocation, BTF
fix-ups and the syscall wrappers; this module only declares the functions the
collection uses and turns their negative-errno returns into ``BpfError``.
Everything works from any Python interpreter, with the standard library only.

File descriptors are plain integers; callers close them (``os.close``) or use
``fd_closing``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno as errno_mod
import os

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError

LIBBPF_PACKAGE = "libbpf1"

# enum bpf_prog_type
PROG_TYPE_SCHED_CLS = 3
PROG_TYPE_XDP = 6
PROG_TYPE_EXT = 28
PROG_TYPE_NAMES = {
    0: "unspec",
    1: "socket_filter",
    2: "kprobe",
    3: "sched_cls",
    4: "sched_act",
    5: "tracepoint",
    6: "xdp",
    7: "perf_event",
    8: "cgroup_skb",
    9: "cgroup_sock",
    10: "lwt_in",
    11: "lwt_out",
    12: "lwt_xmit",
    13: "sock_ops",
    14: "sk_skb",
    15: "cgroup_device",
    16: "sk_msg",
    17: "raw_tracepoint",
    18: "cgroup_sock_addr",
    19: "lwt_seg6local",
    20: "lirc_mode2",
    21: "sk_reuseport",
    22: "flow_dissector",
    23: "cgroup_sysctl",
    24: "raw_tracepoint_writable",
    25: "cgroup_sockopt",
    26: "tracing",
    27: "struct_ops",
    28: "ext",
    29: "lsm",
    30: "sk_lookup",
    31: "syscall",
    32: "netfilter",
}

# enum bpf_map_type
MAP_TYPE_NAMES = {
    0: "unspec",
    1: "hash",
    2: "array",
    3: "prog_array",
    4: "perf_event_array",
    5: "percpu_hash",
    6: "percpu_array",
    7: "stack_trace",
    8: "cgroup_array",
    9: "lru_hash",
    10: "lru_percpu_hash",
    11: "lpm_trie",
    12: "array_of_maps",
    13: "hash_of_maps",
    14: "devmap",
    15: "sockmap",
    16: "cpumap",
    17: "xskmap",
    18: "sockhash",
    19: "cgroup_storage",
    20: "reuseport_sockarray",
    21: "percpu_cgroup_storage",
    22: "queue",
    23: "stack",
    24: "sk_storage",
    25: "devmap_hash",
    26: "struct_ops",
    27: "ringbuf",
    28: "inode_storage",
    29: "task_storage",
    30: "bloom_filter",
    31: "user_ringbuf",
    32: "cgrp_storage",
    33: "arena",
}
MAP_TYPE_IDS = {name: num for num, name in MAP_TYPE_NAMES.items()}
PERCPU_MAP_TYPES = frozenset({"percpu_hash", "percpu_array", "lru_percpu_hash", "percpu_cgroup_storage"})

# enum bpf_attach_type (the ones the collection uses)
ATTACH_XDP = 37
ATTACH_TCX_INGRESS = 46
ATTACH_TCX_EGRESS = 47

# enum bpf_link_type
LINK_TYPE_NAMES = {
    0: "unspec",
    1: "raw_tracepoint",
    2: "tracing",
    3: "cgroup",
    4: "iter",
    5: "netns",
    6: "xdp",
    7: "perf_event",
    8: "kprobe_multi",
    9: "struct_ops",
    10: "netfilter",
    11: "tcx",
    12: "uprobe_multi",
    13: "netkit",
}

# XDP flags (linux/if_link.h)
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4

# map update flags
BPF_ANY = 0

# link update flags
BPF_F_REPLACE = 1 << 2
# test run flags
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1

# bpf_insn for tiny hand-made programs (probes): r0 = imm; exit
_BPF_ALU64_MOV_K = 0xB7
_BPF_JMP_EXIT = 0x95


class BpfError(FleetError, OSError):
    """A failed libbpf call: the operation, the errno and, for loads, the verifier log."""

    RESULT_ATTRS = {"verifier_log": "log"}

    def __init__(self, op: str, err: int, detail: str = "", log: str = ""):
        self.op = op
        self.log = log
        message = "%s failed: %s" % (op, os.strerror(err))
        if detail:
            message += " (%s)" % detail
        super().__init__(err, message)

    def __str__(self) -> str:
        return str(self.strerror or "")


class LibbpfMissing(FleetError, RuntimeError):
    """libbpf.so.1 could not be loaded."""


_LIB = None
_LIBC = None


def _declare(lib: ctypes.CDLL) -> None:
    c_int, c_uint32, c_uint64, c_void_p, c_char_p, c_size_t = (
        ctypes.c_int,
        ctypes.c_uint32,
        ctypes.c_uint64,
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
    )
    u32p = ctypes.POINTER(c_uint32)
    signatures = {
        "bpf_map_create": (c_int, [c_int, c_char_p, c_uint32, c_uint32, c_uint32, c_void_p]),
        "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
        "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
        "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
        "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
        "bpf_map_lookup_batch": (c_int, [c_int, c_void_p, c_void_p, c_void_p, c_void_p, u32p, c_void_p]),
        "bpf_map_update_batch": (c_int, [c_int, c_void_p, c_void_p, u32p, c_void_p]),
        "bpf_map_delete_batch": (c_int, [c_int, c_void_p, u32p, c_void_p]),
        "bpf_map_freeze": (c_int, [c_int]),
        "bpf_obj_pin": (c_int, [c_int, c_char_p]),
        "bpf_obj_get": (c_int, [c_char_p]),
        "bpf_prog_load": (c_int, [c_int, c_char_p, c_char_p, c_void_p, c_size_t, c_void_p]),
        "bpf_link_create": (c_int, [c_int, c_int, c_int, c_void_p]),
        "bpf_link_update": (c_int, [c_int, c_int, c_void_p]),
        "bpf_link_detach": (c_int, [c_int]),
        "bpf_map_get_next_id": (c_int, [c_uint32, u32p]),
        "bpf_btf_get_next_id": (c_int, [c_uint32, u32p]),
        "bpf_link_get_next_id": (c_int, [c_uint32, u32p]),
        "bpf_prog_get_fd_by_id": (c_int, [c_uint32]),
        "bpf_map_get_fd_by_id": (c_int, [c_uint32]),
        "bpf_btf_get_fd_by_id": (c_int, [c_uint32]),
        "bpf_link_get_fd_by_id": (c_int, [c_uint32]),
        "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, u32p]),
        "bpf_prog_query": (c_int, [c_int, c_int, c_uint32, u32p, u32p, u32p]),
        "bpf_prog_test_run_opts": (c_int, [c_int, c_void_p]),
        "libbpf_probe_bpf_prog_type": (c_int, [c_int, c_void_p]),
        "libbpf_num_possible_cpus": (c_int, []),
        "libbpf_set_print": (c_void_p, [c_void_p]),
        "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
        "bpf_object__load": (c_int, [c_void_p]),
        "bpf_object__close": (None, [c_void_p]),
        "bpf_object__btf": (c_void_p, [c_void_p]),
        "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
        "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
        "bpf_map__name": (c_char_p, [c_void_p]),
        "bpf_map__type": (c_int, [c_void_p]),
        "bpf_map__key_size": (c_uint32, [c_void_p]),
        "bpf_map__value_size": (c_uint32, [c_void_p]),
        "bpf_map__max_entries": (c_uint32, [c_void_p]),
        "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint32]),
        "bpf_map__map_flags": (c_uint32, [c_void_p]),
        "bpf_map__fd": (c_int, [c_void_p]),
        "bpf_map__reuse_fd": (c_int, [c_void_p, c_int]),
        "bpf_map__is_internal": (ctypes.c_bool, [c_void_p]),
        "bpf_map__initial_value": (c_void_p, [c_void_p, ctypes.POINTER(c_size_t)]),
        "bpf_map__btf_key_type_id": (c_uint32, [c_void_p]),
        "bpf_map__btf_value_type_id": (c_uint32, [c_void_p]),
        "bpf_program__name": (c_char_p, [c_void_p]),
        "bpf_program__section_name": (c_char_p, [c_void_p]),
        "bpf_program__fd": (c_int, [c_void_p]),
        "bpf_program__type": (c_int, [c_void_p]),
        "bpf_program__set_autoload": (c_int, [c_void_p, ctypes.c_bool]),
        "bpf_program__set_ifindex": (None, [c_void_p, c_uint32]),
        "bpf_program__flags": (c_uint32, [c_void_p]),
        "bpf_program__set_log_buf": (c_int, [c_void_p, c_char_p, c_size_t]),
        "bpf_program__set_log_level": (c_int, [c_void_p, c_uint32]),
        "btf__raw_data": (c_void_p, [c_void_p, u32p]),
    }
    for name, (restype, argtypes) in signatures.items():
        func = getattr(lib, name)
        func.restype = restype
        func.argtypes = argtypes


def lib() -> ctypes.CDLL:
    """The loaded libbpf, declared; raises LibbpfMissing naming the package."""
    global _LIB
    if _LIB is None:
        path = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            handle = ctypes.CDLL(path, use_errno=True)
            _declare(handle)
        except (OSError, AttributeError) as exc:
            raise LibbpfMissing("libbpf 1.x is required (Debian/Ubuntu package %s): %s" % (LIBBPF_PACKAGE, exc))
        _LIB = handle
    return _LIB


def available() -> bool:
    try:
        lib()
    except LibbpfMissing:
        return False
    return True


def _check(ret: int, op: str, detail: str = "") -> int:
    if ret < 0:
        raise BpfError(op, -ret if ret > -4096 else ctypes.get_errno(), detail)
    return ret


@contextlib.contextmanager
def fd_closing(fd: int):
    """Close a BPF file descriptor when the block ends."""
    try:
        yield fd
    finally:
        if fd is not None and fd >= 0:
            os.close(fd)


def num_possible_cpus() -> int:
    return _check(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


# ---------------------------------------------------------------- pins and ids


def obj_get(path: str) -> int:
    return _check(lib().bpf_obj_get(path.encode()), "bpf_obj_get", path)


def obj_pin(fd: int, path: str) -> None:
    _check(lib().bpf_obj_pin(fd, path.encode()), "bpf_obj_pin", path)


def _next_ids(func_name: str):
    func = getattr(lib(), func_name)
    current = ctypes.c_uint32(0)
    while True:
        nxt = ctypes.c_uint32(0)
        ret = func(current.value, ctypes.byref(nxt))
        if ret < 0:
            return
        yield nxt.value
        current = nxt


def map_ids():
    return _next_ids("bpf_map_get_next_id")


def link_ids():
    return _next_ids("bpf_link_get_next_id")


def prog_fd_by_id(prog_id: int) -> int:
    return _check(lib().bpf_prog_get_fd_by_id(prog_id), "bpf_prog_get_fd_by_id", str(prog_id))


def map_fd_by_id(map_id: int) -> int:
    return _check(lib().bpf_map_get_fd_by_id(map_id), "bpf_map_get_fd_by_id", str(map_id))


def link_fd_by_id(link_id: int) -> int:
    return _check(lib().bpf_link_get_fd_by_id(link_id), "bpf_link_get_fd_by_id", str(link_id))


def btf_fd_by_id(btf_id: int) -> int:
    return _check(lib().bpf_btf_get_fd_by_id(btf_id), "bpf_btf_get_fd_by_id", str(btf_id))


# ---------------------------------------------------------------- info structs


class ProgInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("attach_btf_obj_id", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
    ]


class MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class LinkInfo(ctypes.Structure):
    # type, id, prog_id, then a union aligned to 8 bytes; the variants the
    # collection reads (xdp, tcx) start with the interface index.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("rest", ctypes.c_uint64 * 6),
    ]


class BtfInfo(ctypes.Structure):
    _fields_ = [
        ("btf", ctypes.c_uint64),
        ("btf_size", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("name", ctypes.c_uint64),
        ("name_len", ctypes.c_uint32),
        ("kernel_btf", ctypes.c_uint32),
    ]


def _info(fd: int, struct, op: str):
    info = struct()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)), op)
    return info


def prog_info(fd: int) -> dict:
    """id, name, tag (hex), type (name), map_ids, btf_id, run counters of a program fd."""
    info = _info(fd, ProgInfo, "bpf_obj_get_info_by_fd(prog)")
    map_ids_out = []
    if info.nr_map_ids:
        count = info.nr_map_ids
        ids = (ctypes.c_uint32 * count)()
        info2 = ProgInfo()
        info2.nr_map_ids = count
        info2.map_ids = ctypes.addressof(ids)
        size = ctypes.c_uint32(ctypes.sizeof(info2))
        _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info2), ctypes.byref(size)), "bpf_obj_get_info_by_fd(prog maps)")
        map_ids_out = list(ids[: min(count, info2.nr_map_ids)])
    return {
        "id": info.id,
        "name": info.name.decode(errors="replace"),
        "tag": bytes(info.tag).hex(),
        "type": PROG_TYPE_NAMES.get(info.type, str(info.type)),
        "map_ids": map_ids_out,
        "btf_id": info.btf_id,
        "ifindex": info.ifindex,
        "load_time": info.load_time,
        "run_time_ns": info.run_time_ns,
        "run_cnt": info.run_cnt,
        "xlated_prog_len": info.xlated_prog_len,
        "jited_prog_len": info.jited_prog_len,
    }


def map_info(fd: int) -> dict:
    """id, name, type (name), key/value sizes, max entries, flags and BTF ids of a map fd."""
    info = _info(fd, MapInfo, "bpf_obj_get_info_by_fd(map)")
    return {
        "id": info.id,
        "name": info.name.decode(errors="replace"),
        "type": MAP_TYPE_NAMES.get(info.type, str(info.type)),
        "key_size": info.key_size,
        "value_size": info.value_size,
        "max_entries": info.max_entries,
        "map_flags": info.map_flags,
        "btf_id": info.btf_id,
        "btf_key_type_id": info.btf_key_type_id,
        "btf_value_type_id": info.btf_value_type_id,
        "ifindex": info.ifindex,
    }


def link_info(fd: int) -> dict:
    """id, type (name), prog_id, and for xdp/tcx links ifindex (and attach type)."""
    info = _info(fd, LinkInfo, "bpf_obj_get_info_by_fd(link)")
    result = {
        "id": info.id,
        "type": LINK_TYPE_NAMES.get(info.type, str(info.type)),
        "prog_id": info.prog_id,
    }
    if result["type"] in ("xdp", "tcx", "netkit"):
        result["ifindex"] = info.ifindex
    if result["type"] == "tcx":
        result["attach_type"] = {ATTACH_TCX_INGRESS: "ingress", ATTACH_TCX_EGRESS: "egress"}.get(info.attach_type, str(info.attach_type))
    return result


def btf_raw(btf_id: int) -> bytes:
    """The raw BTF blob (header, types, strings) the kernel holds under btf_id."""
    with fd_closing(btf_fd_by_id(btf_id)) as fd:
        info = _info(fd, BtfInfo, "bpf_obj_get_info_by_fd(btf)")
        size = info.btf_size
        buf = ctypes.create_string_buffer(size)
        info2 = BtfInfo()
        info2.btf = ctypes.addressof(buf)
        info2.btf_size = size
        length = ctypes.c_uint32(ctypes.sizeof(info2))
        _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info2), ctypes.byref(length)), "bpf_obj_get_info_by_fd(btf data)")
        return buf.raw[:size]


# ---------------------------------------------------------------- maps


class MapCreateOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
        ("numa_node", ctypes.c_uint32),
        ("map_ifindex", ctypes.c_uint32),
    ]


def map_create(map_type: str, name: str, key_size: int, value_size: int, max_entries: int, map_flags: int = 0, inner_map_fd: int = 0) -> int:
    opts = MapCreateOpts(sz=ctypes.sizeof(MapCreateOpts), map_flags=map_flags, inner_map_fd=inner_map_fd)
    return _check(
        lib().bpf_map_create(MAP_TYPE_IDS[map_type], name.encode()[:15], key_size, value_size, max_entries, ctypes.byref(opts)), "bpf_map_create", name
    )


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    _check(lib().bpf_map_update_elem(fd, key, value, flags), "bpf_map_update_elem")


def map_lookup(fd: int, key: bytes, value_size: int):
    """The value bytes under key, or None when the key is absent."""
    buf = ctypes.create_string_buffer(value_size)
    ret = lib().bpf_map_lookup_elem(fd, key, buf)
    if ret == -errno_mod.ENOENT:
        return None
    _check(ret, "bpf_map_lookup_elem")
    return buf.raw


def map_delete(fd: int, key: bytes) -> bool:
    """Delete key; False when it was not there."""
    ret = lib().bpf_map_delete_elem(fd, key)
    if ret == -errno_mod.ENOENT:
        return False
    _check(ret, "bpf_map_delete_elem")
    return True


def map_keys(fd: int, key_size: int):
    """Every key, by BPF_MAP_GET_NEXT_KEY (for map types without batch support)."""
    prev = None
    buf = ctypes.create_string_buffer(key_size)
    while True:
        ret = lib().bpf_map_get_next_key(fd, prev, buf)
        if ret == -errno_mod.ENOENT:
            return
        _check(ret, "bpf_map_get_next_key")
        key = buf.raw
        yield key
        prev = key


class MapBatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def _batch_opts(elem_flags: int = 0):
    return MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts), elem_flags=elem_flags, flags=0)


def map_lookup_batch(fd: int, key_size: int, value_size: int, max_entries: int, chunk: int = 65536):
    """All (keys, values) as two bytes objects of equal count, with BPF_MAP_LOOKUP_BATCH.

    value_size is the size of one element's value as the syscall returns it
    (for per-CPU maps: round_up(value_size, 8) * possible CPUs).
    Raises BpfError with errno EINVAL/ENOTSUPP for map types without batch support.
    """
    chunk = max(1, min(chunk, max_entries or 1))
    keys_buf = ctypes.create_string_buffer(key_size * chunk)
    vals_buf = ctypes.create_string_buffer(value_size * chunk)
    # hash maps use a 4-byte bucket cursor, arrays a key-sized one: give room for both
    token_size = max(key_size, 8)
    in_tok = ctypes.create_string_buffer(token_size)
    out_tok = ctypes.create_string_buffer(token_size)
    first = True
    keys_out, vals_out = [], []
    total = 0
    opts = _batch_opts()
    while True:
        count = ctypes.c_uint32(chunk)
        ret = lib().bpf_map_lookup_batch(fd, None if first else in_tok, out_tok, keys_buf, vals_buf, ctypes.byref(count), ctypes.byref(opts))
        done = ret == -errno_mod.ENOENT
        if ret < 0 and not done:
            _check(ret, "bpf_map_lookup_batch")
        n = count.value
        if n:
            keys_out.append(keys_buf.raw[: n * key_size])
            vals_out.append(vals_buf.raw[: n * value_size])
            total += n
        if done:
            break
        ctypes.memmove(in_tok, out_tok, token_size)
        first = False
    return b"".join(keys_out), b"".join(vals_out), total


def map_update_batch(fd: int, keys: bytes, values: bytes, count: int, elem_flags: int = 0) -> int:
    """Write count elements; returns how many the kernel applied (raises on error after a partial write,
    with ``applied`` set on the exception)."""
    n = ctypes.c_uint32(count)
    opts = _batch_opts(elem_flags)
    ret = lib().bpf_map_update_batch(fd, keys, values, ctypes.byref(n), ctypes.byref(opts))
    if ret < 0:
        exc = BpfError("bpf_map_update_batch", -ret)
        exc.applied = n.value
        raise exc
    return n.value


def map_delete_batch(fd: int, keys: bytes, count: int) -> int:
    n = ctypes.c_uint32(count)
    opts = _batch_opts()
    ret = lib().bpf_map_delete_batch(fd, keys, ctypes.byref(n), ctypes.byref(opts))
    if ret < 0:
        exc = BpfError("bpf_map_delete_batch", -ret)
        exc.applied = n.value
        raise exc
    return n.value


# ---------------------------------------------------------------- programs and links


def prog_load_insns(prog_type: int, name: str, insns: bytes, license_: str = "GPL", expected_attach_type: int = 0, ifindex: int = 0) -> int:
    """Load raw instructions (8 bytes each), for probes and tiny helper programs."""
    opts = ProgLoadOpts(sz=ctypes.sizeof(ProgLoadOpts), expected_attach_type=expected_attach_type, prog_ifindex=ifindex)
    return _check(lib().bpf_prog_load(prog_type, name.encode()[:15], license_.encode(), insns, len(insns) // 8, ctypes.byref(opts)), "bpf_prog_load", name)


class ProgLoadOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("attempts", ctypes.c_int),
        ("expected_attach_type", ctypes.c_int),
        ("prog_btf_fd", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_ifindex", ctypes.c_uint32),
        ("kern_version", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("attach_prog_fd", ctypes.c_uint32),
        ("attach_btf_obj_fd", ctypes.c_uint32),
        ("fd_array", ctypes.c_void_p),
        ("func_info", ctypes.c_void_p),
        ("func_info_cnt", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_void_p),
        ("line_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_char_p),
    ]


def return_insns(value: int) -> bytes:
    """A program that returns a constant: r0 = value; exit."""
    mov = bytes([_BPF_ALU64_MOV_K, 0]) + (0).to_bytes(2, "little") + int(value).to_bytes(4, "little", signed=True)
    ext = bytes([_BPF_JMP_EXIT, 0, 0, 0, 0, 0, 0, 0])
    return mov + ext


class LinkCreateOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("flags", ctypes.c_uint32),
        ("iter_info", ctypes.c_void_p),
        ("iter_info_len", ctypes.c_uint32),
        ("target_btf_id", ctypes.c_uint32),
        ("union", ctypes.c_uint64 * 5),
    ]


class LinkUpdateOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("flags", ctypes.c_uint32), ("old_prog_fd", ctypes.c_uint32)]


def link_create(prog_fd: int, target: int, attach_type: int, flags: int = 0) -> int:
    """BPF_LINK_CREATE: target is an ifindex for xdp and tcx links."""
    opts = LinkCreateOpts(sz=ctypes.sizeof(LinkCreateOpts), flags=flags)
    return _check(lib().bpf_link_create(prog_fd, target, attach_type, ctypes.byref(opts)), "bpf_link_create")


def link_update(link_fd: int, new_prog_fd: int, old_prog_fd: int = -1) -> None:
    """Atomically swap the program behind a link; with old_prog_fd, only if that one is still there."""
    opts = LinkUpdateOpts(sz=ctypes.sizeof(LinkUpdateOpts))
    if old_prog_fd >= 0:
        opts.flags = BPF_F_REPLACE
        opts.old_prog_fd = old_prog_fd
    _check(lib().bpf_link_update(link_fd, new_prog_fd, ctypes.byref(opts)), "bpf_link_update")


def link_detach(link_fd: int) -> None:
    _check(lib().bpf_link_detach(link_fd), "bpf_link_detach")


def prog_query(target: int, attach_type: int, max_progs: int = 64) -> list:
    """Program ids attached at (target, attach_type): a cgroup fd, or an ifindex for tcx."""
    ids = (ctypes.c_uint32 * max_progs)()
    cnt = ctypes.c_uint32(max_progs)
    flags = ctypes.c_uint32(0)
    ret = lib().bpf_prog_query(target, attach_type, 0, ctypes.byref(flags), ids, ctypes.byref(cnt))
    if ret < 0:
        raise BpfError("bpf_prog_query", -ret)
    return list(ids[: cnt.value])


class TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class TestRunResult:
    __slots__ = ("retval", "data", "duration_ns", "ctx")

    def __init__(self, retval: int, data: bytes, duration_ns: int, ctx: bytes):
        self.retval = retval
        self.data = data
        self.duration_ns = duration_ns
        self.ctx = ctx

    def __repr__(self) -> str:
        return "TestRunResult(retval=%d, len=%d, ns=%d)" % (self.retval, len(self.data), self.duration_ns)


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1, ctx: bytes = b"", flags: int = 0, batch_size: int = 0, data_out_size: int = 0) -> TestRunResult:
    """BPF_PROG_TEST_RUN: run the program on data; returns verdict, output bytes, ns per run.

    ctx is an xdp_md / __sk_buff image for programs that read it (ingress ifindex, mark).
    With BPF_F_TEST_XDP_LIVE_FRAMES the frames are really transmitted (XDP_TX/REDIRECT), repeat
    times, batch_size at a time; nothing comes back but the return code.
    """
    live = bool(flags & BPF_F_TEST_XDP_LIVE_FRAMES)  # the kernel refuses data_out and ctx_out then
    in_buf = ctypes.create_string_buffer(data, len(data))
    out_size = data_out_size or (len(data) + 512)
    out_buf = None if live else ctypes.create_string_buffer(out_size)
    ctx_in = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    ctx_out = ctypes.create_string_buffer(len(ctx)) if ctx and not live else None
    opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts))
    opts.data_in = ctypes.addressof(in_buf)
    opts.data_size_in = len(data)
    if out_buf is not None:
        opts.data_out = ctypes.addressof(out_buf)
        opts.data_size_out = out_size
    if ctx:
        opts.ctx_in = ctypes.addressof(ctx_in)
        opts.ctx_size_in = len(ctx)
    if ctx_out is not None:
        opts.ctx_out = ctypes.addressof(ctx_out)
        opts.ctx_size_out = len(ctx)
    opts.repeat = repeat
    opts.flags = flags
    opts.batch_size = batch_size
    _check(lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "bpf_prog_test_run_opts")
    data_out = out_buf.raw[: opts.data_size_out] if out_buf is not None else b""
    ctx_res = ctx_out.raw[: opts.ctx_size_out] if ctx_out is not None else b""
    return TestRunResult(opts.retval, data_out, opts.duration, ctx_res)


def probe_prog_type(prog_type: int) -> bool:
    """libbpf's own probe: can this kernel load a program of this type?"""
    return lib().libbpf_probe_bpf_prog_type(prog_type, None) == 1


# ---------------------------------------------------------------- ELF objects

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_MESSAGES = []


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _LIBC.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        _LIBC.vsnprintf.restype = ctypes.c_int
    return _LIBC


@_PRINT_FN
def _collect_message(level, fmt, args):  # pragma: no cover - called from C
    buf = ctypes.create_string_buffer(2048)
    _libc().vsnprintf(buf, len(buf), fmt, args)
    _MESSAGES.append(buf.value.decode(errors="replace"))
    return 0


def _capture_messages() -> None:
    _libc()
    lib().libbpf_set_print(ctypes.cast(_collect_message, ctypes.c_void_p))


class ObjMap:
    """A map declared by an ELF object, before or after load."""

    def __init__(self, ptr):
        self._ptr = ptr

    @property
    def name(self) -> str:
        return lib().bpf_map__name(self._ptr).decode()

    @property
    def type(self) -> str:
        return MAP_TYPE_NAMES.get(lib().bpf_map__type(self._ptr), "unknown")

    @property
    def key_size(self) -> int:
        return lib().bpf_map__key_size(self._ptr)

    @property
    def value_size(self) -> int:
        return lib().bpf_map__value_size(self._ptr)

    @property
    def max_entries(self) -> int:
        return lib().bpf_map__max_entries(self._ptr)

    def set_max_entries(self, value: int) -> None:
        _check(lib().bpf_map__set_max_entries(self._ptr, value), "bpf_map__set_max_entries", self.name)

    @property
    def map_flags(self) -> int:
        return lib().bpf_map__map_flags(self._ptr)

    @property
    def internal(self) -> bool:
        """True for .data/.rodata/.bss/.kconfig maps that libbpf makes itself."""
        return bool(lib().bpf_map__is_internal(self._ptr))

    @property
    def fd(self) -> int:
        return lib().bpf_map__fd(self._ptr)

    def reuse_fd(self, fd: int) -> None:
        """Use an existing kernel map (e.g. a pinned one) instead of creating this one."""
        _check(lib().bpf_map__reuse_fd(self._ptr, fd), "bpf_map__reuse_fd", self.name)

    def initial_value(self):
        """A writable ctypes view of an internal map's contents before load (e.g. .rodata)."""
        size = ctypes.c_size_t(0)
        ptr = lib().bpf_map__initial_value(self._ptr, ctypes.byref(size))
        if not ptr:
            return None
        return (ctypes.c_uint8 * size.value).from_address(ptr)

    def layout(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "key_size": self.key_size,
            "value_size": self.value_size,
            "max_entries": self.max_entries,
            "map_flags": self.map_flags,
        }


class ObjProgram:
    """A program declared by an ELF object."""

    def __init__(self, ptr):
        self._ptr = ptr
        self._log = None

    @property
    def name(self) -> str:
        return lib().bpf_program__name(self._ptr).decode()

    @property
    def section(self) -> str:
        return lib().bpf_program__section_name(self._ptr).decode()

    @property
    def type(self) -> str:
        return PROG_TYPE_NAMES.get(lib().bpf_program__type(self._ptr), "unknown")

    @property
    def fd(self) -> int:
        return lib().bpf_program__fd(self._ptr)

    def set_autoload(self, enabled: bool) -> None:
        _check(lib().bpf_program__set_autoload(self._ptr, enabled), "bpf_program__set_autoload", self.name)

    def set_ifindex(self, ifindex: int) -> None:
        """Bind for hardware offload (the program is loaded for that device)."""
        lib().bpf_program__set_ifindex(self._ptr, ifindex)

    def capture_log(self, size: int = 1 << 20) -> None:
        """Keep the verifier log (libbpf asks for it when a load fails)."""
        self._log = ctypes.create_string_buffer(size)
        _check(lib().bpf_program__set_log_buf(self._ptr, self._log, size), "bpf_program__set_log_buf")

    @property
    def log(self) -> str:
        return self._log.value.decode(errors="replace") if self._log is not None else ""


class BpfObject:
    """An ELF BPF object opened with libbpf: inspect, adjust maps, load, then take fds.

    with BpfObject.open(path) as obj:
        obj.map("deny_v4").reuse_fd(pinned_fd)
        obj.load()
        prog_fd = obj.program("xdp_filter").fd

    Closing the object closes libbpf's fds; pin or dup what must outlive it.
    """

    def __init__(self, ptr, path: str):
        self._ptr = ptr
        self.path = path
        self.loaded = False

    @classmethod
    def open(cls, path: str) -> BpfObject:
        _capture_messages()
        del _MESSAGES[:]
        ptr = lib().bpf_object__open_file(path.encode(), None)
        if not ptr:
            err = ctypes.get_errno() or errno_mod.EINVAL
            raise BpfError("bpf_object__open_file", err, path, log="\n".join(_MESSAGES))
        return cls(ptr, path)

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._ptr:
            lib().bpf_object__close(self._ptr)
            self._ptr = None

    def maps(self) -> list:
        out, cur = [], None
        while True:
            cur = lib().bpf_object__next_map(self._ptr, cur)
            if not cur:
                return out
            out.append(ObjMap(cur))

    def programs(self) -> list:
        out, cur = [], None
        while True:
            cur = lib().bpf_object__next_program(self._ptr, cur)
            if not cur:
                return out
            out.append(ObjProgram(cur))

    def map(self, name: str) -> ObjMap:
        for item in self.maps():
            if item.name == name:
                return item
        raise KeyError(name)

    def program(self, name: str) -> ObjProgram:
        for item in self.programs():
            if item.name == name or item.section == name:
                return item
        raise KeyError(name)

    def rodata(self):
        """The .rodata map (constants the loader may set before load), or None."""
        for item in self.maps():
            if item.internal and item.name.endswith(".rodata"):
                return item
        return None

    def btf_raw(self) -> bytes:
        """The object's BTF blob, for layouts of maps and constants."""
        btf = lib().bpf_object__btf(self._ptr)
        if not btf:
            return b""
        size = ctypes.c_uint32(0)
        ptr = lib().btf__raw_data(btf, ctypes.byref(size))
        if not ptr:
            return b""
        return ctypes.string_at(ptr, size.value)

    def load(self) -> None:
        """Load maps and programs; on failure raise BpfError carrying the verifier log."""
        progs = self.programs()
        for prog in progs:
            if prog._log is None:
                prog.capture_log()
        del _MESSAGES[:]
        ret = lib().bpf_object__load(self._ptr)
        if ret < 0:
            logs = [p.log for p in progs if p.log]
            log = "\n".join(logs) if logs else "\n".join(_MESSAGES)
            raise BpfError("bpf_object__load", -ret, os.path.basename(self.path), log=log)
        self.loaded = True

    @staticmethod
    def messages() -> list:
        """libbpf's own messages since the last open/load (warnings, reasons)."""
        return list(_MESSAGES)
