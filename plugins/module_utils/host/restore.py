# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host-side command: restore every recorded deployment at boot, and write textfile metrics.

    python3 -m ansible_collections.ebpf.fleet.plugins.module_utils.host.restore restore [--state-dir DIR]
    python3 -m ansible_collections.ebpf.fleet.plugins.module_utils.host.restore metrics --textfile DIR

It runs on the host with no controller and no Ansible: it imports only the collection's module_utils (the
same code the modules run: deploy.plan/apply for the programs, map_sync for the maps) and the standard
library, plus pyroute2 and libbpf as the modules do. The bpf_host role installs it as
/usr/local/sbin/ebpf-fleet-host (extras/host/ebpf-fleet-host) with the systemd units of extras/host/systemd.

restore, per recorded deployment (records.py, map_records.py), under the state_dir lock:
  mount bpffs when missing -> load the recorded object copy (its checksum checked) -> plan each hook as the
  module does -> when anything differs, load the whole chain and attach it in its recorded order and mode ->
  write every map's recorded declaration. A host already in its recorded state is left alone; a deployment
  that cannot be restored is reported and the others still are; the exit code is 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ansible_collections.ebpf.fleet.plugins.module_utils import errors, validate
from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError
from ansible_collections.ebpf.fleet.plugins.module_utils.host import records
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_records, map_sync
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import MapCodec
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import bcc_load, deploy, loader

STATE_DIR_ENV = "EBPF_FLEET_STATE_DIR"
TEXTFILE_ENV = "EBPF_FLEET_TEXTFILE_DIR"


class RestoreError(FleetError, RuntimeError):
    """A recorded deployment that cannot be brought back as recorded."""


def _object_info(state_dir: str, name: str, rec: dict):
    hook, program = rec.get("hook"), rec.get("program", "")
    if rec.get("compiler") == "bcc":
        src = os.path.join(records.deployment_dir(state_dir, name), "source.c")
        if not bcc_load.has_bcc():
            raise RestoreError(
                "deployment %s was compiled with bcc: restoring it needs bcc (%s) in the Python that runs this command" % (name, bcc_load.BCC_PACKAGE)
            )
        flags = bcc_load.cflags(rec.get("defines") or {}, rec.get("include_dirs") or [])
        info = loader.ObjectInfo(
            path=src,
            sha256=bcc_load.digest(src, flags, program, hook),
            program=program,
            section="",
            prog_type=bcc_load.PROG_TYPE_FOR_HOOK[hook].lower(),
            compiler="bcc",
            cflags=flags,
        )
    else:
        info = loader.inspect(records.object_path(state_dir, name), program, hook)
    if info.sha256 != rec.get("object_sha256"):
        raise RestoreError(
            "deployment %s: the recorded object copy %s has checksum %s, the record says %s; re-run "
            "its task from the controller" % (name, info.path, info.sha256[:12], str(rec.get("object_sha256"))[:12])
        )
    return info


def request_of(state_dir: str, name: str, rec: dict, replace_maps: bool = False) -> deploy.Request:
    """The module's request, rebuilt from the deployment's record."""
    hook = rec.get("hook")
    if hook not in ("xdp", "tc_ingress", "tc_egress"):
        raise RestoreError("deployment %s: the record names no hook (got %r)" % (name, hook))
    return deploy.Request(
        name=name,
        hook=hook,
        state="present",
        interfaces=list(rec.get("interfaces") or []),
        program=rec.get("program", ""),
        priority=int(rec.get("priority", 50)),
        mode=rec.get("mode") or "",
        tc_attach=rec.get("tc_attach") or "auto",
        allow_generic_fallback=bool(rec.get("allow_generic_fallback")),
        replace_incompatible_maps=replace_maps,
        pin_root=rec.get("pin_root") or bpffs.PIN_ROOT_DEFAULT,
        state_dir=state_dir,
    )


def restore_programs(state_dir: str, name: str, rec: dict, replace_maps: bool = False) -> dict:
    """Plan the deployment's hooks as the module does; apply when anything differs. {hook id: action}.

    replace_maps: pinned maps that no longer fit the recorded object are replaced (a revert to an object whose
    maps an upgrade replaced); otherwise they fail the restore."""
    req = request_of(state_dir, name, rec, replace_maps)
    validate.check_params({"name": name, "interfaces": req.interfaces, "pin_root": req.pin_root, "state_dir": state_dir}, pinned_interfaces=True)
    bpffs.ensure_pin_root(req.pin_root)
    info = _object_info(state_dir, name, rec)
    plans = deploy.plan(req, info)
    maps_report = deploy.check_maps(req, info) if info.compiler != "bcc" else {}
    if maps_report.get("incompatible") and not replace_maps:
        raise RestoreError(
            "deployment %s: pinned maps do not fit the recorded object (%s); re-run its task with "
            "replace_incompatible_maps" % (name, ", ".join(m["map"] for m in maps_report["incompatible"]))
        )
    actions = {hp.state.hook_id: hp.action for hp in plans}
    if any(action != "none" for action in actions.values()):
        deploy.apply(req, info, plans, maps_report)
    return actions


def _write_declared(fd: int, decl: map_records.Declared, where: str) -> int:
    """Bring one map to its recorded declaration; the number of elements written or deleted."""
    info = libbpf.map_info(fd)
    outer_info, target_fd = None, fd
    if info["type"] in map_sync.OUTER_MAPS:
        outer_info = info
        target_fd = map_sync.inner_map_fd(fd, info)
    try:
        codec = MapCodec.for_fd(target_fd)
        if (codec.key_size, codec.value_buf_size) != (decl.key_size, decl.value_size):
            raise RestoreError(
                "%s: the recorded entries have %d-byte keys and %d-byte values, the map %d and %d; "
                "re-run the bpf_map task that declares it" % (where, decl.key_size, decl.value_size, codec.key_size, codec.value_buf_size)
            )
        current = map_sync.read_current(target_fd, codec)
        mode = "sync" if decl.exact else "merge"
        if outer_info is not None:
            target = dict(current) if mode == "merge" else {}
            target.update(decl.entries)
            the_plan = map_sync.plan(current, target, "sync")
            if the_plan.empty:
                return 0
            map_sync.swap_inner(fd, outer_info, codec, the_plan.desired)
            return len(the_plan.desired)
        the_plan = map_sync.plan(current, decl.entries, mode, map_sync.absent_value(codec))
        if the_plan.empty:
            return 0
        return map_sync.apply(target_fd, codec, the_plan)
    finally:
        if target_fd != fd:
            os.close(target_fd)


def restore_maps(state_dir: str, name: str, pin_root: str) -> dict:
    """{map: elements written} for every recorded declaration of the deployment."""
    out = {}
    for map_name in map_records.listed(state_dir, name):
        decl = map_records.read(state_dir, name, map_name)
        path = bpffs.map_pin(pin_root, name, map_name)
        try:
            fd = libbpf.obj_get(path)
        except libbpf.BpfError as exc:
            raise RestoreError(
                "deployment %s: map %s has recorded contents but is not pinned at %s (%s): its "
                "object no longer declares it? re-run the deployment's tasks" % (name, map_name, path, exc)
            )
        with libbpf.fd_closing(fd):
            out[map_name] = _write_declared(fd, decl, path)
    return out


def restore_one(state_dir: str, name: str, replace_maps: bool = False) -> dict:
    rec = records.read_deployment(state_dir, name)
    if not rec:
        raise RestoreError("deployment %s has no record in %s" % (name, state_dir))
    hooks = restore_programs(state_dir, name, rec, replace_maps)
    maps = restore_maps(state_dir, name, rec.get("pin_root") or bpffs.PIN_ROOT_DEFAULT)
    changed = any(action != "none" for action in hooks.values()) or any(maps.values())
    return {"name": name, "status": "restored" if changed else "unchanged", "hooks": hooks, "maps": maps}


def failure(exc: BaseException) -> str:
    """One line for a deployment that could not be restored."""
    if isinstance(exc, FleetError):
        return errors.bounded(str(exc))
    return errors.unexpected(exc)["msg"]


def restore(state_dir: str, names: list = None) -> list:
    """Restore every recorded deployment (or the named ones); one result per deployment, failures included.

    A change still waiting for its controller's confirmation whose watchdog is gone (the host restarted inside
    the window) is reverted first: an unconfirmed change never outlives a reboot (checkpoint.py)."""
    results = []
    if not os.path.isdir(state_dir):
        return results
    # imported here: checkpoint imports this module for its reverts
    from ansible_collections.ebpf.fleet.plugins.module_utils.host import checkpoint  # pylint: disable=import-outside-toplevel

    with records.locked(state_dir, create=False):
        pending = checkpoint.read_pending(state_dir)
        if pending and pending.get("state") == "armed" and not checkpoint.watchdog_alive(pending):
            report = checkpoint.revert(
                state_dir,
                "its watchdog is gone (the host restarted?) before the change armed at %s was confirmed" % pending.get("armed"),
                pending=pending,
                watchdog=True,
            )
            for name, res in sorted(report["deployments"].items()):
                status = "reverted" if res["status"] != "failed" else "failed"
                results.append(dict({"hooks": {}, "maps": {}}, **dict(res, name=name, status=status)))
            names = [name for name in names or [] if name not in report["deployments"]] if names else None
        elif pending and pending.get("state") == "confirmed":
            checkpoint.commit(state_dir, pending)
        done = {item["name"] for item in results}
        for name in [n for n in (names or records.list_deployments(state_dir)) if n not in done]:
            try:
                results.append(restore_one(state_dir, name))
            except Exception as exc:  # pylint: disable=broad-except  # reported, the others still restored
                results.append({"name": name, "status": "failed", "error": failure(exc)})
    return results


# ---------------------------------------------------------------- the command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ebpf-fleet-host", description="Restore this host's ebpf.fleet deployments from their records, or write their textfile metrics."
    )
    parser.add_argument(
        "--state-dir",
        default=os.environ.get(STATE_DIR_ENV) or records.STATE_DIR_DEFAULT,
        help="the records' folder (default: $%s or %s)" % (STATE_DIR_ENV, records.STATE_DIR_DEFAULT),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rest = sub.add_parser("restore", help="bring back every recorded deployment (programs, chains, map contents)")
    rest.add_argument("--json", action="store_true", help="print the results as one JSON document")
    rest.add_argument("names", nargs="*", help="only these deployments")
    met = sub.add_parser("metrics", help="write node_exporter textfile metrics (ebpf_fleet_*)")
    met.add_argument("--textfile", default=os.environ.get(TEXTFILE_ENV), help="node_exporter's textfile folder (default: $%s)" % TEXTFILE_ENV)
    met.add_argument("--name", default="ebpf_fleet.prom", help="file name in the folder (default ebpf_fleet.prom)")
    return parser


def main(argv: list = None) -> int:
    args = _parser().parse_args(argv)
    if not libbpf.available():
        sys.stderr.write("ebpf-fleet-host: libbpf 1.x is required (Debian package %s)\n" % libbpf.LIBBPF_PACKAGE)
        return 2
    if args.command == "restore":
        results = restore(args.state_dir, args.names)
        if args.json:
            sys.stdout.write(json.dumps(results, sort_keys=True) + "\n")
        else:
            for item in results:
                line = "%s: %s" % (item["name"], item["status"])
                if item["status"] == "failed":
                    line += ": %s" % item["error"]
                else:
                    line += " (hooks: %s; maps written: %s)" % (
                        ", ".join("%s %s" % kv for kv in sorted(item["hooks"].items())) or "none",
                        ", ".join("%s %d" % kv for kv in sorted(item["maps"].items()) if kv[1]) or "none",
                    )
                sys.stdout.write(line + "\n")
        return 1 if any(item["status"] == "failed" for item in results) else 0
    from ansible_collections.ebpf.fleet.plugins.module_utils.host import metrics  # pylint: disable=import-outside-toplevel

    if not args.textfile:
        sys.stderr.write("ebpf-fleet-host metrics: --textfile DIR (or $%s) is required\n" % TEXTFILE_ENV)
        return 2
    try:
        path, failed = metrics.write_textfile(args.state_dir, args.textfile, args.name)
    except (OSError, FleetError) as exc:
        sys.stderr.write("ebpf-fleet-host metrics: %s\n" % failure(exc))
        return 1
    sys.stdout.write("wrote %s\n" % path)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
