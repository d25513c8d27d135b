# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Open, inspect and load one program of a BPF ELF object with libbpf.

A loaded *instance* is one program of an object, loaded for one position of
one hook's chain: ``fleet_chain_slot`` (in .rodata) set to its position, the
object's ``fleet_chain`` map replaced by that generation's chain map and its
data maps replaced by the deployment's existing maps (pins) where given.
The caller owns the returned file descriptors.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import btf, libbpf

CHAIN_MAP = "fleet_chain"
SLOT_VAR = "fleet_chain_slot"
NEXT_VAR = "fleet_chain_next"
CHAIN_MAX_DEFAULT = 8
LOG_TAIL_LINES = 40
LAYOUT_KEYS = ("type", "key_size", "value_size", "max_entries", "map_flags")
BPF_F_NO_COMMON_LRU = 0x2
U32_MAX = 0xFFFFFFFF

PROG_TYPES_FOR_HOOK = {
    "xdp": ("xdp",),
    "tc_ingress": ("sched_cls", "sched_act"),
    "tc_egress": ("sched_cls", "sched_act"),
}


class LoadError(FleetError, RuntimeError):
    """A load that failed; ``log`` holds the end of the verifier's log."""

    RESULT_ATTRS = {"verifier_log": "log"}

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def log_tail(log: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a verifier log (the failing instruction and the reason are at the end)."""
    kept = (log or "").rstrip().splitlines()
    return "\n".join(kept[-lines:])


@dataclass
class ObjectInfo:
    path: str
    sha256: str
    program: str
    section: str
    prog_type: str
    maps: dict = field(default_factory=dict)  # data maps: name -> layout
    has_chain: bool = False
    has_slot: bool = False
    chain_max: int = CHAIN_MAX_DEFAULT
    compiler: str = "libbpf"  # libbpf (an ELF object) or bcc (bcc_load.py)
    cflags: list = field(default_factory=list)  # bcc: the flags it compiles with
    preloaded: object = None  # a program loaded already (bcc_load.Loaded)


def _pick_program(obj, program: str, path: str):
    progs = obj.programs()
    if not progs:
        raise LoadError("object %s holds no program" % path)
    if program:
        for prog in progs:
            if prog.name == program:
                return prog
        for prog in progs:
            if prog.section == program:
                return prog
        raise LoadError("program=%r is not in %s; programs there: %s" % (program, path, ", ".join("%s (section %s)" % (p.name, p.section) for p in progs)))
    if len(progs) > 1:
        raise LoadError("object %s holds several programs (%s): set program to one of them" % (path, ", ".join(p.name for p in progs)))
    return progs[0]


def inspect(path: str, program: str = "", hook: str = "") -> ObjectInfo:
    """What an object declares (its chosen program, data maps, chain support), without loading."""
    if not os.path.isfile(path):
        raise LoadError("object=%r does not exist or is not a file" % path)
    try:
        obj = libbpf.BpfObject.open(path)
    except libbpf.BpfError as exc:
        raise LoadError("cannot open %s as a BPF ELF object: %s" % (path, exc), exc.log)
    try:
        prog = _pick_program(obj, program, path)
        info = ObjectInfo(path=path, sha256=sha256_file(path), program=prog.name, section=prog.section, prog_type=prog.type)
        if hook and prog.type not in PROG_TYPES_FOR_HOOK[hook]:
            raise LoadError(
                "program %r in %s has type %s (section %r); hook %s expects %s"
                % (prog.name, path, prog.type, prog.section, hook, " or ".join(PROG_TYPES_FOR_HOOK[hook]))
            )
        for item in obj.maps():
            if item.internal:
                continue
            if item.name == CHAIN_MAP:
                info.has_chain = item.type == "prog_array"
                info.chain_max = item.max_entries
                continue
            info.maps[item.name] = layout = item.layout()
            layout["max_entries"] = created_max_entries(item.name, layout["max_entries"], layout["map_flags"])
        rodata = obj.rodata()
        if rodata is not None:
            info.has_slot = SLOT_VAR in rodata_vars(obj)
        return info
    finally:
        obj.close()


def created_max_entries(name: str, declared: int, map_flags: int, ncpus: int = 0) -> int:
    """The max_entries a map is created with, from what its object declares.

    One rule: a map flagged BPF_F_NO_COMMON_LRU (an LRU hash with one LRU list per CPU, which the kernel sizes
    by splitting max_entries evenly across the possible CPUs) declares its capacity PER CPU, and is created
    with that times the host's possible CPUs; any other map is created as declared. Applied at load
    (size_per_cpu_maps) and wherever a pinned map's layout is compared with the object's (inspect)."""
    if not map_flags & BPF_F_NO_COMMON_LRU:
        return declared
    total = declared * (ncpus or libbpf.num_possible_cpus())
    if total > U32_MAX:
        raise LoadError(
            "map %s: %d entries per CPU x %d possible CPUs = %d is more than a map can hold (%d); "
            "declare fewer entries per CPU" % (name, declared, total // declared, total, U32_MAX)
        )
    return total


def size_per_cpu_maps(obj) -> None:
    """Before load: give every BPF_F_NO_COMMON_LRU map of an opened object its declared capacity per CPU
    times the possible CPUs (created_max_entries). Maps reused from a pin keep the pinned map's size."""
    for item in obj.maps():
        if item.internal:
            continue
        flags = item.map_flags
        if flags & BPF_F_NO_COMMON_LRU:
            item.set_max_entries(created_max_entries(item.name, item.max_entries, flags))


# Flags the kernel adds on its own when it creates a map of this type (devmaps are read-only to programs).
KERNEL_ADDED_FLAGS = {"devmap": 0x80, "devmap_hash": 0x80}  # BPF_F_RDONLY_PROG


def incompatible(layout: dict, live: dict) -> list:
    """The layout fields where a pinned map differs from what the object declares."""
    live = dict(live)
    added = KERNEL_ADDED_FLAGS.get(live.get("type"), 0)
    if added and isinstance(live.get("map_flags"), int):
        live["map_flags"] &= ~added | (layout.get("map_flags") or 0)
    return ["%s %s != %s" % (key, live.get(key), layout.get(key)) for key in LAYOUT_KEYS if live.get(key) != layout.get(key)]


def rodata_vars(obj) -> dict:
    """{name: (offset, size)} of the object's .rodata variables, from its BTF (empty without BTF)."""
    raw = obj.btf_raw()
    if not raw:
        return {}
    return btf.Btf.parse(raw).datasec_vars(".rodata")


def set_rodata(obj, var: str, value: int) -> None:
    """Set a `volatile const` integer of the object's .rodata before load (absent: nothing to do)."""
    rodata = obj.rodata()
    if rodata is None:
        return
    where = rodata_vars(obj).get(var)
    if where is None:
        return
    offset, size = where
    view = rodata.initial_value()
    if view is None or offset + size > len(view):
        raise LoadError("cannot set %s: .rodata is smaller than its BTF says" % var)
    for i, byte in enumerate(int(value).to_bytes(size, "little")):
        view[offset + i] = byte


@dataclass
class Instance:
    prog_fd: int
    prog_id: int
    tag: str
    name: str
    new_maps: dict = field(default_factory=dict)  # map name -> fd of maps created by this load

    def close(self) -> None:
        for fd in [self.prog_fd] + list(self.new_maps.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self.new_maps = {}


def load_instance(info: ObjectInfo, slot: int, chain_fd: int, map_fds: dict, ifindex: int = 0, next_slot: int = 0) -> Instance:
    """Load info.program for chain position ``slot`` (``next_slot``: the following program's, 0 when last);
    map_fds (name -> fd) are reused.

    A program loaded already (bcc) is used as it is: its position does not matter, as it runs alone or last."""
    if info.preloaded is not None:
        pre = info.preloaded
        return Instance(prog_fd=os.dup(pre.prog_fd), prog_id=pre.prog_id, tag=pre.tag, name=pre.name)
    try:
        obj = libbpf.BpfObject.open(info.path)
    except libbpf.BpfError as exc:
        raise LoadError("cannot open %s: %s" % (info.path, exc), exc.log)
    try:
        prog = _pick_program(obj, info.program, info.path)
        for other in obj.programs():
            if other.name != prog.name:
                other.set_autoload(False)
        if ifindex:
            prog.set_ifindex(ifindex)
        set_rodata(obj, SLOT_VAR, slot)
        set_rodata(obj, NEXT_VAR, next_slot)
        size_per_cpu_maps(obj)
        for item in obj.maps():
            if item.internal:
                continue
            if item.name == CHAIN_MAP and chain_fd >= 0:
                item.reuse_fd(chain_fd)
            elif item.name in map_fds:
                item.reuse_fd(map_fds[item.name])
        try:
            obj.load()
        except libbpf.BpfError as exc:
            tail = log_tail(exc.log or "\n".join(obj.messages()))
            raise LoadError("loading program %r of %s failed: %s\nverifier log (end):\n%s" % (prog.name, os.path.basename(info.path), exc, tail), tail)
        prog_fd = os.dup(prog.fd)
        pinfo = libbpf.prog_info(prog_fd)
        new_maps = {}
        for item in obj.maps():
            if item.internal or item.name == CHAIN_MAP or item.name in map_fds:
                continue
            new_maps[item.name] = os.dup(item.fd)
        return Instance(prog_fd=prog_fd, prog_id=pinfo["id"], tag=pinfo["tag"], name=pinfo["name"], new_maps=new_maps)
    finally:
        obj.close()
