# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One deployment's life on a host: read, plan, apply (shared by xdp_program and tc_program).

read the hooks it touches -> desired chains -> plan (per hook: unchanged,
update, attach, detach) -> in check mode report, otherwise load every new
generation first (a verifier failure stops here, nothing changed), then swap
each hook atomically, then pin, then record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError
from ansible_collections.ebpf.fleet.plugins.module_utils.host import records
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import attach, bpffs, ethtool, libbpf, netdev_genl, netlink, xdp_drivers
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import bcc_load, bcc_pins, chain, loader


class DeployError(FleetError, RuntimeError):
    def __init__(self, message: str, **details):
        super().__init__(message)
        self.details = details


@dataclass
class Request:
    name: str
    hook: str  # xdp, tc_ingress, tc_egress
    state: str = "present"
    interfaces: list = field(default_factory=list)
    program: str = ""
    priority: int = 50
    mode: str = "native"  # xdp: native/generic/offload/auto; tc: unused
    tc_attach: str = "auto"  # tc: auto, tcx or clsact (the method is resolved per hook by plan)
    allow_generic_fallback: bool = False
    replace_incompatible_maps: bool = False
    pin_root: str = bpffs.PIN_ROOT_DEFAULT
    state_dir: str = records.STATE_DIR_DEFAULT


@dataclass
class HookPlan:
    state: chain.HookState
    before: list
    after: list
    action: str  # none, attach, update, detach, repair
    mode: str = ""
    method: str = ""


def _line(pos: int, entry: chain.Entry, mode: str, new: bool = False) -> str:
    tag = entry.tag or ("object %s" % entry.sha256[:12] if entry.sha256 else "?")
    return "%d. %s (deployment %s, priority %d) tag %s%s%s" % (
        pos + 1,
        entry.program or "?",
        entry.deployment,
        entry.priority,
        tag,
        " mode %s" % mode if mode else "",
        " (to be loaded)" if new else "",
    )


def describe(entries: list, mode: str, pending: str = "") -> list:
    return [_line(i, e, mode, new=(e.deployment == pending and not e.tag)) for i, e in enumerate(entries)]


def _mode_matches(req: Request, current: str) -> bool:
    if req.hook != "xdp":
        return True
    if req.mode == "auto":
        return current == "native" or (current == "generic" and req.allow_generic_fallback)
    return req.mode == current


def _resolve_method(req: Request, ifindex: int, current: str) -> str:
    if req.hook == "xdp":
        return "link"
    if req.tc_attach == "tcx":
        if not attach.tcx_supported(ifindex):
            raise DeployError("attach=tcx: this kernel has no TCX links (use attach: clsact or auto)")
        return "link"
    if req.tc_attach == "clsact":
        return "clsact"
    if current:
        return current
    return "link" if attach.tcx_supported(ifindex) else "clsact"


def _hooks_of(req: Request) -> list:
    """Interfaces this run touches: the requested ones plus those the deployment is recorded on."""
    names = list(req.interfaces) if req.state == "present" else []
    for hook_id in records.list_hooks(req.state_dir):
        hook, _sep, ifname = hook_id.partition("@")
        if hook != req.hook or ifname in names:
            continue
        rec = records.read_hook(req.state_dir, hook_id) or {}
        if rec.get("pin_root") == req.pin_root and any(e.get("deployment") == req.name for e in rec.get("entries", [])):
            names.append(ifname)
    return names


def plan(req: Request, info) -> list:
    """Per hook: what is there, what should be, and the action."""
    plans = []
    for ifname in _hooks_of(req):
        try:
            ifindex = netlink.ifindex(ifname)
        except netlink.LinkNotFound as exc:
            if req.state == "present" and ifname in req.interfaces:
                raise DeployError("interfaces: %s" % exc)
            continue
        state = chain.read_hook(req.pin_root, req.state_dir, req.hook, ifname, ifindex)
        before = chain.order(state.entries)
        others = [e for e in before if e.deployment != req.name]
        mine = [e for e in before if e.deployment == req.name]
        after = list(others)
        if req.state == "present" and ifname in req.interfaces:
            after.append(chain.Entry(deployment=req.name, priority=req.priority, program=info.program, sha256=info.sha256))
        after = chain.order(after)
        method = _resolve_method(req, ifindex, state.method) if after else state.method
        mode = state.mode
        if req.hook == "xdp" and after:
            if others and state.mode:
                if not _mode_matches(req, state.mode):
                    raise DeployError(
                        "mode=%s conflicts with the %s mode of the other programs on %s (%s)"
                        % (req.mode, state.mode, ifname, ", ".join(e.deployment for e in others))
                    )
            elif req.mode == "auto":
                mode = state.mode if state.mode and _mode_matches(req, state.mode) else "auto"
            else:
                mode = req.mode
        same = (
            [(e.deployment, e.priority) for e in before] == [(e.deployment, e.priority) for e in after]
            and state.consistent
            and all(m.sha256 == info.sha256 and m.program == info.program for m in mine)
            and (not mine or _mode_matches(req, state.mode))
            and (not after or method == state.method)
        )
        if same:
            action = "none"
        elif not after:
            action = "detach"
        elif not state.live_ids:
            action = "attach"
        elif not state.consistent:
            action = "repair"
        else:
            action = "update"
        if action != "none" and after and req.hook == "xdp" and not state.live_ids:
            _check_foreign_xdp(ifname, ifindex)
        if action != "none" and after and req.hook == "xdp" and mode == "offload":
            check_offload(ifname, ifindex)
        plans.append(HookPlan(state=state, before=before, after=after, action=action, mode=mode, method=method))
    return plans


def check_offload(ifname: str, ifindex: int) -> None:
    """mode=offload needs a NIC that runs XDP programs itself: refuse before anything loads, saying why."""
    features = netdev_genl.xdp_features([ifindex])
    flags = None if features is None else features.get(ifindex, {}).get("flags")
    driver = ethtool.drvinfo(ifname)["driver"]
    decision = xdp_drivers.decide_offload(xdp_drivers.lookup(driver), driver, os.uname().release, flags)
    if decision["supported"] == xdp_drivers.NO:
        raise DeployError(
            "mode=offload: interface %s (driver %s) cannot run XDP programs on the NIC: %s; use mode: "
            "native, generic or auto" % (ifname, driver or "unknown", decision["reason"])
        )


def _check_foreign_xdp(ifname: str, ifindex: int) -> None:
    if attach.ext_supported() and attach.libxdp_dispatcher(ifindex):
        raise DeployError(
            "interface %s is managed by libxdp's multi-program dispatcher (pins under /sys/fs/bpf/xdp); "
            "ebpf.fleet will not replace it: unload it with xdp-loader first" % ifname
        )
    xdp = netlink.xdp_state(ifname)
    if xdp.get("prog_id"):
        raise DeployError(
            "interface %s already runs XDP program id %d (mode %s) that ebpf.fleet did not attach; detach it first" % (ifname, xdp["prog_id"], xdp.get("mode"))
        )


def check_maps(req: Request, info) -> dict:
    """Pinned maps of the deployment vs the maps the object declares."""
    folder = os.path.join(bpffs.deployment_dir(req.pin_root, req.name), "maps")
    pinned = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    report = {"reused": [], "created": [], "incompatible": [], "obsolete": []}
    for map_name in pinned:
        if map_name not in info.maps:
            report["obsolete"].append(map_name)
            continue
        try:
            fd = libbpf.obj_get(os.path.join(folder, map_name))
        except libbpf.BpfError:
            report["created"].append(map_name)
            continue
        with libbpf.fd_closing(fd):
            live = libbpf.map_info(fd)
        diffs = loader.incompatible(info.maps[map_name], live)
        if diffs:
            report["incompatible"].append({"map": map_name, "differences": diffs})
        else:
            report["reused"].append(map_name)
    report["created"] += [m for m in info.maps if m not in pinned]
    return report


def _infos_for(req: Request, info, plans: list) -> dict:
    infos = {req.name: info} if info is not None else {}
    for hp in plans:
        for entry in hp.after:
            if entry.deployment in infos:
                continue
            rec = records.read_deployment(req.state_dir, entry.deployment)
            if rec and rec.get("compiler") == "bcc":
                infos[entry.deployment] = _pinned_bcc(req, entry, hp, rec)
                continue
            path = records.object_path(req.state_dir, entry.deployment)
            if not rec or not os.path.isfile(path):
                raise DeployError(
                    "deployment %r shares %s but has no record with its object in %s: cannot reload it "
                    "for the new chain" % (entry.deployment, hp.state.hook_id, req.state_dir)
                )
            infos[entry.deployment] = loader.inspect(path, rec.get("program", ""), req.hook)
    return infos


def _pinned_bcc(req: Request, entry, hp: HookPlan, rec: dict):
    """Another deployment's bcc program, reused from its pin on this hook (bcc cannot reload it for a slot)."""
    loaded = bcc_pins.pinned(bpffs.prog_pin(req.pin_root, entry.deployment, hp.state.hook, hp.state.ifname))
    if loaded is None:
        raise DeployError(
            "deployment %r (compiled with bcc) shares %s but its program is not pinned any more: re-run its task first" % (entry.deployment, hp.state.hook_id)
        )
    return loader.ObjectInfo(
        path="", sha256=rec.get("object_sha256", ""), program=rec.get("program", ""), section="", prog_type=loaded.name, compiler="bcc", preloaded=loaded
    )


def _load_bcc(req: Request, info, changing: list, mapset, maps_report: dict) -> None:
    """Compile and load this deployment's bcc program once, carry its pinned maps' entries over."""
    if not any(e.deployment == req.name for hp in changing for e in hp.after):
        return
    loaded = bcc_load.load(info.path, info.program, req.hook, info.cflags)
    info.preloaded = loaded
    maps_report.update(bcc_pins.carry_over(mapset.for_deployment(req.name), loaded.maps, req.replace_incompatible_maps))
    mapset.add_new(req.name, {name: os.dup(fd) for name, fd in loaded.maps.items()})


def apply(req: Request, info, plans: list, maps_report: dict) -> dict:
    """Load all new generations, swap them in, pin, record. Returns per-hook results."""
    changing = [hp for hp in plans if hp.action != "none"]
    infos = _infos_for(req, info, changing)
    mapset = chain.MapSet(req.pin_root)
    if info is not None and info.compiler == "bcc" and info.preloaded is None:
        _load_bcc(req, info, changing, mapset, maps_report)
    replace = [m["map"] for m in maps_report.get("incompatible", [])]
    if replace:
        mapset.skip[req.name] = set(replace)
    gens = []
    results = {}
    try:
        for hp in changing:
            if hp.after:
                offload = hp.state.ifindex if hp.mode == "offload" else 0
                gens.append((hp, chain.build_generation(hp.state, hp.after, infos, mapset, offload)))
            else:
                gens.append((hp, None))
        # everything loaded: now the kernel changes, one hook at a time, each atomically
        for hp, gen in gens:
            if gen is None:
                chain.detach(hp.state, req.pin_root)
                chain.remove_hook_dir(req.pin_root, hp.state.hook, hp.state.ifname)
                records.remove_hook(req.state_dir, hp.state.hook_id)
                bpffs.unpin(bpffs.prog_pin(req.pin_root, req.name, hp.state.hook, hp.state.ifname))
                results[hp.state.hook_id] = {"action": "detach"}
                continue
            mode = hp.mode if hp.mode != "auto" else "native"
            res = chain.swap(gen, req.pin_root, mode, hp.method, allow_fallback=req.allow_generic_fallback and req.mode == "auto")
            hp.mode = res["mode"] if req.hook == "xdp" else ""
            new_state = chain.HookState(
                hook=hp.state.hook,
                ifname=hp.state.ifname,
                ifindex=hp.state.ifindex,
                entries=gen.entries,
                mode=hp.mode,
                method=hp.method,
                qdisc_created=res.get("qdisc_created", hp.state.qdisc_created),
            )
            for entry, inst in zip(gen.entries, gen.instances):
                bpffs.pin(inst.prog_fd, bpffs.prog_pin(req.pin_root, entry.deployment, hp.state.hook, hp.state.ifname))
            for gone in {e.deployment for e in hp.before} - {e.deployment for e in gen.entries}:
                bpffs.unpin(bpffs.prog_pin(req.pin_root, gone, hp.state.hook, hp.state.ifname))
            records.write_hook(req.state_dir, hp.state.hook_id, new_state.record(req.pin_root))
            hp.after = gen.entries
            results[hp.state.hook_id] = dict(res, action=hp.action)
        # data maps created by this run, and maps replaced or dropped by an upgrade
        for dep, fds in mapset.new.items():
            for map_name, fd in fds.items():
                bpffs.pin(fd, bpffs.map_pin(req.pin_root, dep, map_name))
        for map_name in maps_report.get("obsolete", []):
            bpffs.unpin(bpffs.map_pin(req.pin_root, req.name, map_name))
    finally:
        for _hp, gen in gens:
            if gen is not None:
                gen.close()
        mapset.close()
    return results


def remove_pins(req: Request) -> bool:
    folder = bpffs.deployment_dir(req.pin_root, req.name)
    if os.path.isdir(folder):
        bpffs.remove_tree(folder)
        return True
    return False
