# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Chains of programs on one hook: read what is attached, plan, build a generation, swap it in.

A hook (``xdp@eth0``, ``tc_ingress@eth0``) carries a chain of programs in
priority order. The first is attached (link or filter); the others sit in a
PROG_ARRAY at slots 1..N-1, reached by tail calls (bpf/include/fleet/chain.h).

Any change builds a NEW generation beside the running one (new chain map,
every program loaded again for its slot, data maps reused from the
deployments' pins) and swaps it in with one atomic operation, so a packet sees
the whole old chain or the whole new one. Pins (bpffs.py's layout):

    <pin_root>/<name>/maps/<map>              data maps, shared by a deployment's hooks
    <pin_root>/<name>/progs/<hook>@<if>       the program instance on that hook
    <pin_root>/_hooks/<hook>@<if>/link        the hook's link (xdp, tcx)
    <pin_root>/_hooks/<hook>@<if>/chain       the chain map of the running generation

The chain's description (order, deployment, priority, program id and tag)
is in ``<state_dir>/.hooks/<hook>@<if>.json`` (bpffs holds pins only).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import converting
from ansible_collections.ebpf.fleet.plugins.module_utils.host import records
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import attach, bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import loader


@dataclass
class Entry:
    deployment: str
    priority: int
    program: str = ""
    sha256: str = ""
    prog_id: int = 0
    tag: str = ""

    def as_dict(self) -> dict:
        return {
            "deployment": self.deployment,
            "priority": self.priority,
            "program": self.program,
            "sha256": self.sha256,
            "prog_id": self.prog_id,
            "tag": self.tag,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Entry:
        return cls(
            deployment=data["deployment"],
            priority=int(data.get("priority", 0)),
            program=data.get("program", ""),
            sha256=data.get("sha256", ""),
            prog_id=int(data.get("prog_id", 0)),
            tag=data.get("tag", ""),
        )


@dataclass
class HookState:
    hook: str
    ifname: str
    ifindex: int
    entries: list = field(default_factory=list)
    mode: str = ""  # xdp: native/generic/offload
    method: str = ""  # link (xdp/tcx) or clsact
    qdisc_created: bool = False
    live_ids: list = field(default_factory=list)

    @property
    def hook_id(self) -> str:
        return bpffs.hook_id(self.hook, self.ifname)

    @property
    def consistent(self) -> bool:
        """The record matches the kernel: same programs, same order."""
        return [e.prog_id for e in self.entries] == self.live_ids

    def record(self, pin_root: str) -> dict:
        return {
            "hook": self.hook,
            "ifname": self.ifname,
            "ifindex": self.ifindex,
            "mode": self.mode,
            "method": self.method,
            "qdisc_created": self.qdisc_created,
            "pin_root": pin_root,
            "entries": [e.as_dict() for e in self.entries],
        }


def hook_paths(pin_root: str, hook: str, ifname: str) -> dict:
    folder = bpffs.hook_dir(pin_root, hook, ifname)
    return {"dir": folder, "link": os.path.join(folder, "link"), "chain": os.path.join(folder, "chain")}


def chain_slot_ids(chain_pin: str) -> dict:
    """{slot: prog id} of a pinned chain map."""
    try:
        fd = libbpf.obj_get(chain_pin)
    except libbpf.BpfError:
        return {}
    out = {}
    with libbpf.fd_closing(fd):
        size = libbpf.map_info(fd)["max_entries"]
        for slot in range(1, size):
            value = libbpf.map_lookup(fd, slot.to_bytes(4, "little"), 4)
            if value is not None:
                out[slot] = int.from_bytes(value, "little")
    return out


def read_hook(pin_root: str, state_dir: str, hook: str, ifname: str, ifindex: int) -> HookState:
    """The recorded chain of a hook and the program ids the kernel really runs there."""
    state = HookState(hook=hook, ifname=ifname, ifindex=ifindex)
    rec = records.read_hook(state_dir, state.hook_id)
    if rec and rec.get("pin_root") == pin_root:
        state.entries = [Entry.from_dict(e) for e in rec.get("entries", [])]
        state.mode = rec.get("mode", "")
        state.method = rec.get("method", "")
        state.qdisc_created = bool(rec.get("qdisc_created"))
    paths = hook_paths(pin_root, hook, ifname)
    first = 0
    if state.method == "clsact":
        first = attach.clsact_prog_id(ifindex, hook)
    elif state.method:
        first = attach.link_prog_id(paths["link"])
    if first:
        slots = chain_slot_ids(paths["chain"])
        state.live_ids = [first] + [slots[s] for s in sorted(slots)]
    return state


def order(entries: list) -> list:
    return sorted(entries, key=lambda e: (e.priority, e.deployment))


# ---------------------------------------------------------------- generations


class MapSet:
    """Data maps per deployment for this run: fds from pins, plus maps created by this run's loads."""

    def __init__(self, pin_root: str):
        self.pin_root = pin_root
        self.fds = {}  # deployment -> {map: fd}
        self.new = {}  # deployment -> {map: fd} created in this run (pinned after the swap)
        self.skip = {}  # deployment -> set of pinned maps NOT to reuse (incompatible, replaced)

    def for_deployment(self, name: str) -> dict:
        if name not in self.fds:
            fds = {}
            folder = os.path.join(bpffs.deployment_dir(self.pin_root, name), "maps")
            if os.path.isdir(folder):
                for map_name in sorted(os.listdir(folder)):
                    if map_name in self.skip.get(name, ()) or "_tmp" in map_name:
                        continue
                    try:
                        fds[map_name] = libbpf.obj_get(os.path.join(folder, map_name))
                    except libbpf.BpfError:
                        continue
            self.fds[name] = fds
        return self.fds[name]

    def add_new(self, name: str, maps: dict) -> None:
        self.for_deployment(name).update(maps)
        self.new.setdefault(name, {}).update(maps)

    def close(self) -> None:
        for fds in self.fds.values():
            for fd in fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fds = {}
        self.new = {}


@dataclass
class Generation:
    hook: HookState
    entries: list  # Entry, in order, prog ids and tags filled
    instances: list  # loader.Instance per entry
    chain_fd: int = -1

    def close(self) -> None:
        for inst in self.instances:
            try:
                os.close(inst.prog_fd)
            except OSError:
                pass
        if self.chain_fd >= 0:
            os.close(self.chain_fd)
            self.chain_fd = -1


def build_generation(hook: HookState, entries: list, infos: dict, maps: MapSet, offload_ifindex: int = 0) -> Generation:
    """Load every program of the chain for its slot, with a fresh chain map. Nothing is attached."""
    entries = order(entries)
    for pos, entry in enumerate(entries[:-1]):
        if not infos[entry.deployment].has_chain:
            raise loader.LoadError(
                "deployment %r (object without the fleet_chain map of fleet/chain.h) can only run alone or "
                "last on %s, but it would be at position %d of %d" % (entry.deployment, hook.hook_id, pos + 1, len(entries))
            )
    size = max([loader.CHAIN_MAX_DEFAULT] + [infos[e.deployment].chain_max for e in entries if infos[e.deployment].has_chain])
    if len(entries) > size:
        raise loader.LoadError("%d programs on %s, more than the chain holds (%d)" % (len(entries), hook.hook_id, size))
    chain_fd = libbpf.map_create("prog_array", "fleet_chain", 4, 4, size)
    gen = Generation(hook=hook, entries=[], instances=[], chain_fd=chain_fd)
    try:
        for slot, entry in enumerate(entries):
            info = infos[entry.deployment]
            next_slot = slot + 1 if slot + 1 < len(entries) else 0
            inst = loader.load_instance(info, slot, chain_fd, maps.for_deployment(entry.deployment), ifindex=offload_ifindex, next_slot=next_slot)
            if inst.new_maps:
                maps.add_new(entry.deployment, inst.new_maps)
                inst.new_maps = {}
            gen.instances.append(inst)
            gen.entries.append(
                Entry(deployment=entry.deployment, priority=entry.priority, program=info.program, sha256=info.sha256, prog_id=inst.prog_id, tag=inst.tag)
            )
            if slot:
                libbpf.map_update(chain_fd, slot.to_bytes(4, "little"), inst.prog_fd.to_bytes(4, "little"))
    except BaseException:
        gen.close()
        raise
    return gen


def swap(gen: Generation, pin_root: str, mode: str, method: str, allow_fallback: bool = False) -> dict:
    """Make gen the running chain of its hook in one atomic step; returns what happened."""
    hook = gen.hook
    paths = hook_paths(pin_root, hook.hook, hook.ifname)
    first_fd = gen.instances[0].prog_fd
    result = {"reattached": False, "fallback": False, "mode": mode, "method": method}
    same_attachment = hook.method == method and (hook.hook != "xdp" or hook.mode == mode) and hook.live_ids
    what = "attaching program %s to %s (%s%s)" % (
        gen.entries[0].program or gen.entries[0].deployment,
        hook.hook_id,
        "clsact filter" if method == "clsact" else "bpf_link",
        ", mode %s" % mode if hook.hook == "xdp" else "",
    )
    with converting(what, hint=_attach_hints(hook, method)):
        result.update(_attach(hook, paths, first_fd, mode, method, same_attachment, allow_fallback, pin_root))
    with converting("pinning the chain map of %s" % hook.hook_id):
        bpffs.pin(gen.chain_fd, paths["chain"])
    return result


def _attach_hints(hook: HookState, method: str) -> dict:
    """What to do when the kernel refuses to attach, by errno."""
    if method == "clsact":
        direction = hook.hook[len("tc_") :]
        return {
            errno.EEXIST: "a tc filter that ebpf.fleet did not create holds priority %d handle %d on %s %s; "
            "remove it (tc filter del dev %s %s prio %d) or use attach: tcx"
            % (attach.CLSACT_PRIO, attach.CLSACT_HANDLE, hook.ifname, direction, hook.ifname, direction, attach.CLSACT_PRIO),
            errno.EBUSY: "another tool holds the clsact qdisc of %s; remove its filters first" % hook.ifname,
        }
    if hook.hook == "xdp":
        return {
            errno.EBUSY: "%s already runs an XDP program that ebpf.fleet did not attach (see `ip link show %s`); "
            "detach it first (ip link set dev %s xdp off)" % (hook.ifname, hook.ifname, hook.ifname),
            errno.EEXIST: "%s already has an XDP program attached; detach it first (ip link set dev %s xdp off)" % (hook.ifname, hook.ifname),
        }
    return {}


def _attach(hook, paths, first_fd, mode, method, same_attachment, allow_fallback, pin_root) -> dict:
    """Attach or swap the first program of a generation; returns what happened (qdisc_created, reattached,
    fallback, mode)."""
    result = {}
    if same_attachment and method == "link":
        attach.link_swap(paths["link"], first_fd, hook.live_ids[0])
    elif same_attachment and method == "clsact":
        attach.clsact_attach(hook.ifindex, hook.hook, first_fd, replace=True)
        result["qdisc_created"] = hook.qdisc_created
    else:
        if hook.live_ids:
            # a different mode or attach method: the old attachment goes first (not atomic)
            detach(hook, pin_root)
            result["reattached"] = True
        if method == "clsact":
            result["qdisc_created"] = attach.clsact_attach(hook.ifindex, hook.hook, first_fd, replace=False)
        else:
            try:
                link_fd = attach.link_attach(hook.hook, hook.ifindex, first_fd, mode)
            except attach.NoNativeXdp as exc:
                if not allow_fallback:
                    raise attach.NoNativeXdp(
                        "interfaces: %s has no native XDP support (%s): expected an interface whose driver runs XDP "
                        "natively; use mode: generic, or mode: auto with allow_generic_fallback: true" % (hook.ifname, exc),
                        field="interfaces",
                        value=hook.ifname,
                    ) from exc
                link_fd = attach.link_attach(hook.hook, hook.ifindex, first_fd, "generic")
                result["mode"] = "generic"
                result["fallback"] = True
            with libbpf.fd_closing(link_fd):
                bpffs.pin(link_fd, paths["link"])
    return result


def detach(hook: HookState, pin_root: str) -> None:
    """Take the hook's chain off the interface and drop its pins."""
    paths = hook_paths(pin_root, hook.hook, hook.ifname)
    with converting("detaching the chain of %s" % hook.hook_id):
        if hook.method == "clsact":
            attach.clsact_remove(hook.ifindex, hook.hook, hook.qdisc_created)
        else:
            attach.link_remove(paths["link"])
    bpffs.unpin(paths["chain"])


def remove_hook_dir(pin_root: str, hook: str, ifname: str) -> None:
    paths = hook_paths(pin_root, hook, ifname)
    for key in ("link", "chain"):
        bpffs.unpin(paths[key])
    try:
        os.rmdir(paths["dir"])
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            raise
