# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drift: whether the kernel still holds what a deployment's records say (read-only).

One implementation for every reader: bpf_info (check_records), the status playbook through it, and the
host command's metrics (host/metrics.py: ebpf_fleet_in_sync, ebpf_fleet_map_in_sync).

Per hook the deployment is recorded on (records.py: the hook's chain in <state_dir>/.hooks/):
  the hook runs the recorded chain (the attached program and the tail-called ones, in order, by id),
  the deployment's program there is the recorded object's (checksum), in the recorded XDP mode.
  A program detached, replaced or attached by another tool, a chain slot rewritten: drifted.
Per map with recorded contents (map_records.py: what bpf_map declared):
  the pinned map holds the declared entries (and, for a map declared with mode sync, nothing else).
  An entry changed, added or deleted by hand (bpftool map update): drifted, naming the map and keys.
Counters and connection tables are never declared, so they never drift.
"""

from __future__ import annotations

import os

from ansible_collections.ebpf.fleet.plugins.module_utils.host import records
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf, netlink, xdp_hook
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_records, map_sync
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import MapCodec
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import chain

IN_SYNC, DRIFTED = "in_sync", "drifted"
MAX_KEYS = 5  # keys named per map in a drift report


def pin_root_of(rec: dict, default: str = bpffs.PIN_ROOT_DEFAULT) -> str:
    return rec.get("pin_root") or default


def recorded_hooks(state_dir: str, name: str, rec: dict) -> dict:
    """{(hook, ifname): hook record or None} of the hooks the deployment is recorded on (or declared for)."""
    out = {}
    for hook_id in records.list_hooks(state_dir):
        hrec = records.read_hook(state_dir, hook_id) or {}
        if hrec.get("pin_root") == pin_root_of(rec) and any(e.get("deployment") == name for e in hrec.get("entries", [])):
            hook, _sep, ifname = hook_id.partition("@")
            out[(hook, ifname)] = hrec
    for ifname in rec.get("interfaces") or []:
        out.setdefault((rec.get("hook"), ifname), None)
    return out


def _program(prog_id: int) -> dict:
    try:
        fd = libbpf.prog_fd_by_id(prog_id)
    except libbpf.BpfError:
        return {}
    with libbpf.fd_closing(fd):
        return libbpf.prog_info(fd)


def _xdp_attached(ifindex: int) -> tuple:
    """(program id, mode) attached to the interface's XDP hook, whoever attached it."""
    try:
        state = xdp_hook.query(ifindex)
    except libbpf.BpfError:
        return 0, None
    return state.get("prog_id") or 0, state.get("mode")


def _not_attached(hook: str, hook_id: str, ifindex: int) -> str:
    if hook == "xdp":
        other, _mode = _xdp_attached(ifindex)
        if other:
            prog = _program(other)
            return "%s runs program %d (%s), not the recorded chain: replaced behind the collection's back" % (hook_id, other, prog.get("name", "?"))
    return "nothing of the recorded chain is attached to %s: detached behind the collection's back" % hook_id


def hook_status(state_dir: str, name: str, rec: dict, hook: str, ifname: str, hrec) -> dict:
    """One hook of a deployment: in_sync, why not (reason), and what runs there."""
    pin_root = pin_root_of(rec)
    hook_id = bpffs.hook_id(hook, ifname)
    # prog_id: what runs at the deployment's place (another tool's program when one replaced the chain: then no tag)
    out = {
        "hook": hook,
        "interface": ifname,
        "in_sync": False,
        "reason": None,
        "position": 0,
        "mode": None,
        "recorded_mode": rec.get("mode") or None,
        "prog_id": 0,
        "recorded_prog_id": 0,
        "tag": None,
        "version": rec.get("version"),
    }
    try:
        ifindex = netlink.ifindex(ifname)
    except netlink.LinkNotFound:
        out["reason"] = "interface %s is not in this network namespace" % ifname
        return out
    if hrec is None:
        out["reason"] = "no chain is recorded for %s" % hook_id
        return out
    state = chain.read_hook(pin_root, state_dir, hook, ifname, ifindex)
    mine = [i for i, e in enumerate(state.entries) if e.deployment == name]
    if not mine:
        out["reason"] = "%s is not in the recorded chain of %s" % (name, hook_id)
        return out
    index = mine[0]
    entry = state.entries[index]
    out.update(position=index + 1, recorded_prog_id=entry.prog_id, mode=state.mode or state.method or None)
    live = state.live_ids[index] if index < len(state.live_ids) else 0
    if not state.live_ids:
        out["reason"] = _not_attached(hook, hook_id, ifindex)
        if hook == "xdp":
            out["prog_id"] = _xdp_attached(ifindex)[0]  # another tool's program, or 0 (tag: none, not ours)
        return out
    prog = _program(live) if live else {}
    out.update(prog_id=live, tag=prog.get("tag"))
    if not state.consistent:
        out["reason"] = "%s runs programs %s, the record says %s" % (hook_id, state.live_ids, [e.prog_id for e in state.entries])
        return out
    if entry.sha256 != rec.get("object_sha256"):
        out["reason"] = "%s runs object %s for %s, the record says %s" % (hook_id, entry.sha256[:12], name, str(rec.get("object_sha256"))[:12])
        return out
    if hook == "xdp":
        attached, mode = _xdp_attached(ifindex)
        if attached != state.live_ids[0]:
            out["reason"] = _not_attached(hook, hook_id, ifindex)
            out.update(prog_id=attached, tag=None)
            return out
        if state.mode and mode and mode != state.mode:
            out["reason"] = "%s runs in %s mode, the record says %s" % (hook_id, mode, state.mode)
            out["mode"] = mode
            return out
    out["in_sync"] = True
    return out


def hooks(state_dir: str, name: str, rec: dict) -> list:
    return [hook_status(state_dir, name, rec, hook, ifname, hrec) for (hook, ifname), hrec in sorted(recorded_hooks(state_dir, name, rec).items())]


def _keys(codec: MapCodec, keys: list) -> list:
    out = []
    for key in keys[:MAX_KEYS]:
        try:
            out.append(codec.decode_key(key))
        except Exception:  # pylint: disable=broad-except  # a key the codec cannot name is shown in hex
            out.append("0x" + key.hex())
    return out


def map_status(state_dir: str, name: str, map_name: str, pin_root: str) -> dict:
    """One map with recorded contents: in_sync, and the declared keys missing or changed, the extra ones."""
    out = {"map": map_name, "in_sync": False, "reason": None, "missing": 0, "changed": 0, "extra": 0, "keys": []}
    try:
        decl = map_records.read(state_dir, name, map_name)
    except map_records.MapRecordError as exc:
        out["reason"] = str(exc)
        return out
    if decl is None:
        out["in_sync"] = True
        return out
    path = bpffs.map_pin(pin_root, name, map_name)
    try:
        fd = libbpf.obj_get(path)
    except libbpf.BpfError:
        out["reason"] = "map %s has recorded contents but is not pinned at %s" % (map_name, path)
        return out
    with libbpf.fd_closing(fd):
        info = libbpf.map_info(fd)
        target = fd
        if info["type"] in map_sync.OUTER_MAPS:
            try:
                target = map_sync.inner_map_fd(fd, info)
            except (map_sync.SyncError, libbpf.BpfError) as exc:
                out["reason"] = str(exc)
                return out
        try:
            codec = MapCodec.for_fd(target)
            if (codec.key_size, codec.value_buf_size) != (decl.key_size, decl.value_size):
                out["reason"] = "map %s has %d-byte keys and %d-byte values, its record %d and %d" % (
                    map_name,
                    codec.key_size,
                    codec.value_buf_size,
                    decl.key_size,
                    decl.value_size,
                )
                return out
            current = map_sync.read_current(target, codec)
            absent = None if target != fd else map_sync.absent_value(codec)
            plan = map_sync.plan(current, decl.entries, "sync" if decl.exact else "merge", absent)
            # an array's elements always exist (read_current leaves out the all-zero ones): never missing
            missing = [k for k in plan.write if k not in current] if absent is None else []
            lost = set(missing)
            changed = [k for k in plan.write if k not in lost]
            out.update(missing=len(missing), changed=len(changed), extra=len(plan.removed), keys=_keys(codec, changed + missing + list(plan.removed)))
        finally:
            if target != fd:
                os.close(target)
    if plan.write or plan.removed:
        parts = ["%d %s" % (count, what) for count, what in ((out["changed"], "changed"), (out["missing"], "missing"), (out["extra"], "not declared")) if count]
        out["reason"] = "map %s: %s by hand (%s)" % (map_name, ", ".join(parts), ", ".join(str(k) for k in out["keys"]))
        return out
    out["in_sync"] = True
    return out


def maps(state_dir: str, name: str, pin_root: str, max_entries: int = 0) -> list:
    """Every map with recorded contents; with max_entries, those with more recorded entries are left out (the
    metrics timer runs every few seconds: reading a million-entry map every time is status.yml's job)."""
    names = map_records.listed(state_dir, name)
    if max_entries:
        names = [m for m in names if (map_records.count(state_dir, name, m) or 0) <= max_entries]
    return [map_status(state_dir, name, map_name, pin_root) for map_name in names]


def check(state_dir: str, name: str, pin_root: str = bpffs.PIN_ROOT_DEFAULT) -> dict:
    """{state: in_sync|drifted, reasons, hooks, maps} of one deployment (pins without a record: drifted)."""
    try:
        rec = records.read_deployment(state_dir, name)
    except records.RecordError as exc:
        return {"state": DRIFTED, "reasons": [str(exc)], "hooks": [], "maps": []}
    if not rec:
        return {"state": DRIFTED, "hooks": [], "maps": [], "reasons": ["%s is pinned under %s but has no record in %s" % (name, pin_root, state_dir)]}
    found_hooks = hooks(state_dir, name, rec)
    found_maps = maps(state_dir, name, pin_root_of(rec, pin_root))
    reasons = [item["reason"] for item in found_hooks + found_maps if not item["in_sync"]]
    return {"state": DRIFTED if reasons else IN_SYNC, "reasons": reasons, "hooks": found_hooks, "maps": found_maps}
