# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The body shared by the xdp_program and tc_program modules: options, compile on the host, plan, apply."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common import respawn

from ansible_collections.ebpf.fleet.plugins.module_utils import shared_options, validate
from ansible_collections.ebpf.fleet.plugins.module_utils.host import records
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf, netlink
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_records
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import bcc_load, clang, deploy, loader

COMPILERS = ["controller", "host", "bcc"]


def common_argument_spec() -> dict:
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        interfaces=dict(type="list", elements="str", default=[]),
        object=dict(type="path"),
        src=dict(type="path"),
        compiler=dict(type="str", default="controller", choices=COMPILERS),
        program=dict(type="str", default=""),
        defines=dict(type="dict", default={}),
        include_dirs=dict(type="list", elements="path", default=[]),
        priority=dict(type="int", default=50),
        replace_incompatible_maps=dict(type="bool", default=False),
        **shared_options.argument_spec(),
    )


def compile_on_host(module, src: str, workdir: str) -> str:
    clang_bin = module.get_bin_path("clang", required=True)
    out = os.path.join(workdir, os.path.splitext(os.path.basename(src))[0] + ".o")
    try:
        cmd = clang.command(clang_bin, src, out, module.params["defines"], module.params["include_dirs"], os.uname().machine)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    rc, _stdout, stderr = module.run_command(cmd, environ_update={"LC_ALL": "C"}, cwd=clang.cwd(src))
    if rc != 0:
        module.fail_json(msg="compiling src=%s with clang failed (rc %d)" % (src, rc), stderr=stderr, cmd=cmd)
    return out


def _validate(module, hook: str) -> None:
    params = module.params
    # names and paths (name, interfaces, pin_root, state_dir): raises InputError before anything changes
    validate.check_params(params, pinned_interfaces=True)
    if params["state"] == "present":
        if not params["interfaces"]:
            module.fail_json(msg="interfaces: state=present needs at least one interface")
        compiled_by_action = params["object"] and params["src"] and params["compiler"] == "controller"
        if bool(params["object"]) == bool(params["src"]) and not compiled_by_action:
            module.fail_json(msg="exactly one of object or src is required with state=present (got %s)" % ("both" if params["object"] else "neither"))
        if params["src"] and params["compiler"] == "controller" and not params["object"]:
            module.fail_json(
                msg="src with compiler=controller is compiled by the action plugin ebpf.fleet.%s; "
                "run the module through Ansible, or set compiler: host" % ("xdp_program" if hook == "xdp" else "tc_program")
            )
        try:
            clang.define_flags(params["defines"])
        except ValueError as exc:
            module.fail_json(msg=str(exc))
    if not 0 <= params["priority"] <= 1000000:
        module.fail_json(msg="priority=%d: expected an integer from 0 to 1000000" % params["priority"])


def run(module, hook: str, mode: str = "", tc_attach: str = "auto", allow_fallback: bool = False) -> None:
    """Plan and apply one deployment; exits the module."""
    if not netlink.HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib(netlink.PYROUTE2_PACKAGE), exception=str(netlink.PYROUTE2_IMPORT_ERROR))
    if not libbpf.available():
        module.fail_json(msg="libbpf 1.x is required (Debian package %s)" % libbpf.LIBBPF_PACKAGE)
    _validate(module, hook)
    params = module.params
    if params["state"] == "present" and params["src"] and params["compiler"] == "bcc" and not module.check_mode:
        ensure_bcc(module)
    workdir = tempfile.mkdtemp(prefix="ebpf_fleet_")
    try:
        _run(module, hook, mode, tc_attach, allow_fallback, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bcc_info(module, hook: str):
    """What the plan needs of a bcc deployment, without compiling: its checksum and function."""
    params = module.params
    if not params["program"]:
        module.fail_json(msg="program: compiler=bcc needs the name of the C function to load")
    if not os.path.isfile(params["src"]):
        module.fail_json(msg="src=%s: no such file on the host (with compiler=bcc the source is read on the host)" % params["src"])
    try:
        flags = bcc_load.cflags(params["defines"], params["include_dirs"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    return loader.ObjectInfo(
        path=params["src"],
        sha256=bcc_load.digest(params["src"], flags, params["program"], hook),
        program=params["program"],
        section="",
        prog_type=bcc_load.PROG_TYPE_FOR_HOOK[hook].lower(),
        compiler="bcc",
        cflags=flags,
    )


def ensure_bcc(module) -> None:
    """bcc is a system-Python library: respawn the module under an interpreter that has it."""
    if bcc_load.has_bcc():
        return
    if not respawn.has_respawned():
        interpreter = respawn.probe_interpreters_for_module(bcc_load.SYSTEM_PYTHONS, "bcc")
        if interpreter:
            respawn.respawn_module(interpreter)
    module.fail_json(msg=missing_required_lib(bcc_load.BCC_PACKAGE))


def _record(params: dict, req, hook: str, mode: str, tc_attach: str, allow_fallback: bool, info) -> dict:
    """The options a deployment's record keeps (records.differs says which of them decide a change)."""
    src = params["src"]
    return dict(
        interfaces=req.interfaces,
        hook=hook,
        mode=mode or None,
        priority=req.priority,
        program=info.program,
        pin_root=req.pin_root,
        defines=params["defines"],
        source=src,
        source_sha256=loader.sha256_file(src) if src and params["compiler"] != "controller" and os.path.isfile(src) else None,
        tc_attach=tc_attach if hook != "xdp" else None,
        allow_generic_fallback=allow_fallback,
        compiler=params["compiler"] if src else None,
        include_dirs=params["include_dirs"],
    )


@dataclass
class Current:
    """read: what the host holds for this deployment before the run."""

    hook: str  # the hook the run acts on (a tc deployment's direction comes from its record)
    record: dict = None  # the deployment's record, None when it was never deployed


@dataclass
class Plan:
    """plan: what apply would do, and what the result and diff report."""

    hooks: list  # deploy.HookPlan per interface
    maps: dict  # deploy.check_maps' report (reused, created, incompatible, obsolete)
    record: dict = None  # the record to write (state=present)
    changed_options: list = field(default_factory=list)
    changed: bool = False


def request_of(params: dict, hook: str, mode: str, tc_attach: str, allow_fallback: bool) -> deploy.Request:
    return deploy.Request(
        name=params["name"],
        hook=hook,
        state=params["state"],
        interfaces=params["interfaces"],
        program=params["program"],
        priority=params["priority"],
        mode=mode or "",
        tc_attach=tc_attach,
        allow_generic_fallback=allow_fallback,
        replace_incompatible_maps=params["replace_incompatible_maps"],
        pin_root=params["pin_root"],
        state_dir=params["state_dir"],
    )


def _uses_bcc(params: dict) -> bool:
    return params["state"] == "present" and bool(params["src"]) and params["compiler"] == "bcc"


def read_current(module, req: deploy.Request) -> Current:
    """read: the deployment's record; an absent tc deployment takes its direction from it."""
    old = records.read_deployment(req.state_dir, req.name)
    hook = req.hook
    if old and old.get("hook") and old.get("hook") != hook and req.state == "absent" and hook.startswith("tc_") and old["hook"].startswith("tc_"):
        # absent needs no direction: the record knows it
        hook = req.hook = old["hook"]
    if old and old.get("hook") and old.get("hook") != hook:
        module.fail_json(msg="name=%s is already a deployment on hook %s; pick another name" % (req.name, old["hook"]))
    return Current(hook=hook, record=old)


def desired(module, req: deploy.Request, workdir: str):
    """desired: the program to run (loader.ObjectInfo), compiled on the host first where asked; None for absent."""
    params = module.params
    if req.state != "present":
        return None
    if _uses_bcc(params):
        return bcc_info(module, req.hook)
    obj = params["object"]
    if params["src"] and params["compiler"] == "host":
        obj = compile_on_host(module, params["src"], workdir)
    try:
        return loader.inspect(obj, params["program"], req.hook)
    except loader.LoadError as exc:
        module.fail_json(msg="object: %s" % exc, verifier_log=exc.log)


def make_plan(module, req: deploy.Request, current: Current, info, mode: str, tc_attach: str, allow_fallback: bool) -> Plan:
    """plan: per hook (deploy.plan), the maps, and the record; nothing is changed."""
    params = module.params
    try:
        hooks = deploy.plan(req, info)
    except deploy.DeployError as exc:
        module.fail_json(msg=str(exc))
    # bcc creates its maps when it loads: they are compared (and carried over) in deploy.apply
    maps_report = deploy.check_maps(req, info) if info is not None and not _uses_bcc(params) else {}
    if maps_report.get("incompatible") and not req.replace_incompatible_maps:
        module.fail_json(
            msg="maps of deployment %s are incompatible with the new object: %s; set "
            "replace_incompatible_maps: true to replace them (their contents are lost)"
            % (req.name, "; ".join("%s (%s)" % (m["map"], ", ".join(m["differences"])) for m in maps_report["incompatible"])),
            maps=maps_report,
        )
    result = Plan(hooks=hooks, maps=maps_report)
    old = current.record
    if req.state == "present":
        result.record = _record(params, req, req.hook, mode, tc_attach, allow_fallback, info)
        result.changed_options = records.changed_fields(old, result.record, info.sha256)
        record_changed = not old or bool(result.changed_options)
    else:
        record_changed = bool(old) or os.path.isdir(bpffs.deployment_dir(req.pin_root, req.name))
    result.changed = record_changed or any(hp.action != "none" for hp in hooks)
    return result


def apply(req: deploy.Request, info, plan: Plan, bcc: bool) -> dict:
    """apply: load, swap, pin (deploy.apply), then write or remove the record; returns the result's additions.

    A failure (FleetError, or a kernel error) ends in the module's errors.failing translator."""
    out = {"applied": deploy.apply(req, info, plan.hooks, plan.maps)}
    if req.state == "present":
        out["record"] = records.write_deployment(
            req.state_dir, req.name, plan.record, info.path, info.sha256, object_file="source.c" if bcc else records.OBJECT_FILE
        )
        # a map replaced (incompatible) or dropped by the new object starts empty: its recorded
        # declaration no longer describes it
        for gone in [m["map"] for m in plan.maps.get("incompatible", [])] + plan.maps.get("obsolete", []):
            map_records.remove(req.state_dir, req.name, gone)
    else:
        deploy.remove_pins(req)
        records.remove_deployment(req.state_dir, req.name)
    return out


def _warnings(applied: dict) -> list:
    warnings = []
    for hook_id, res in applied.items():
        if res.get("fallback"):
            warnings.append("%s: no native XDP, fell back to generic mode" % hook_id)
        if res.get("reattached"):
            warnings.append("%s: the attach mode or method changed, the chain was re-attached" % hook_id)
    return warnings


def _diff(req: deploy.Request, current: Current, plan: Plan) -> dict:
    """The diff as planned (programs still to be loaded are marked); read before apply changes the kernel."""
    diff = {"before": {}, "after": {}}
    for hp in plan.hooks:
        diff["before"][hp.state.hook_id] = deploy.describe(hp.before, hp.state.mode)
        diff["after"][hp.state.hook_id] = deploy.describe(hp.after, hp.mode, pending=req.name)
    if current.record and plan.changed_options:
        diff["before"]["options"] = {key: current.record.get(key) for key in plan.changed_options}
        diff["after"]["options"] = {key: plan.record.get(key) for key in plan.changed_options}
    return diff


def _run(module, hook, mode, tc_attach, allow_fallback, workdir):
    params = module.params
    req = request_of(params, hook, mode, tc_attach, allow_fallback)
    # nothing is mounted, created or locked unless this run writes: check mode and removing a name that was
    # never deployed leave the host as they found it
    # (pin_root itself was checked with the other names and paths, validate.check_params)
    writes = not module.check_mode and req.state == "present"
    if writes:
        bpffs.ensure_pin_root(req.pin_root)
    with records.locked(req.state_dir, create=writes):
        current = read_current(module, req)
        info = desired(module, req, workdir)
        plan = make_plan(module, req, current, info, mode, tc_attach, allow_fallback)
        result = {"changed": plan.changed, "name": req.name, "hook": req.hook, "state": req.state, "attachments": {}, "maps": plan.maps}
        diff = _diff(req, current, plan)
        warnings = []
        if plan.changed and not module.check_mode:
            result.update(apply(req, info, plan, _uses_bcc(params)))
            warnings = _warnings(result["applied"])
            for hp in plan.hooks:
                diff["after"][hp.state.hook_id] = deploy.describe(hp.after, hp.mode)
        for hp in plan.hooks:
            result["attachments"][hp.state.ifname] = {
                "hook": hp.state.hook,
                "mode": hp.mode or None,
                "method": hp.method or None,
                "action": hp.action,
                "chain": [dict(e.as_dict(), position=i + 1) for i, e in enumerate(hp.after)],
            }
        if module._diff:
            result["diff"] = diff
        for warning in warnings:
            module.warn(warning)
        module.exit_json(**result)
