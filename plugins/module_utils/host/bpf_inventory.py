# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What runs where: XDP and TC programs per interface, and this collection's deployments (read-only).

Used by the bpf_info module. Everything is read from the kernel (netlink
through libbpf and pyroute2, BPF_PROG_QUERY, object info by id) and from the
collection's pins and records; nothing is changed.

A program is ``managed`` when one of the collection's pins under the pin root
holds it (``<pin_root>/<deployment>/progs/<hook>@<if>``); programs of the
collection's chains that run by tail call (not attached to the hook
themselves) are listed after the attached one with ``via: tail_call``.
"""

from __future__ import annotations

import os
import socket

from ansible_collections.ebpf.fleet.plugins.module_utils.host import records
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import attach, bpffs, libbpf, xdp_hook
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_types

try:
    from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import btf as btf_mod
    from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_codec

    HAS_MAP_CODEC = True
except ImportError:  # the typed codec arrives with bpf_map; raw hex until then
    btf_mod = map_codec = None
    HAS_MAP_CODEC = False

TC_HOOKS = ("tc_ingress", "tc_egress")


# ---------------------------------------------------------------- programs


def program(prog_id: int) -> dict:
    """id, name, tag, type of a program by id ({'id': n, 'error': ...} when it vanished)."""
    try:
        fd = libbpf.prog_fd_by_id(prog_id)
    except libbpf.BpfError as exc:
        return {"id": prog_id, "error": str(exc)}
    with libbpf.fd_closing(fd):
        info = libbpf.prog_info(fd)
    return {
        "id": info["id"],
        "name": info["name"],
        "tag": info["tag"],
        "type": info["type"],
        "map_ids": info["map_ids"],
        "run_cnt": info["run_cnt"],
        "run_time_ns": info["run_time_ns"],
    }


def managed_programs(pin_root: str) -> dict:
    """{prog id: (deployment, hook id)} for every program pinned under the pin root."""
    out = {}
    if not os.path.isdir(pin_root):
        return out
    for name in sorted(os.listdir(pin_root)):
        folder = os.path.join(pin_root, name, "progs")
        if name == "_hooks" or not os.path.isdir(folder):
            continue
        for hook_id in sorted(os.listdir(folder)):
            try:
                fd = libbpf.obj_get(os.path.join(folder, hook_id))
            except libbpf.BpfError:
                continue
            with libbpf.fd_closing(fd):
                out[libbpf.prog_info(fd)["id"]] = (name, hook_id)
    return out


def links_by_prog() -> dict:
    """{prog id: link info} for the xdp and tcx links the kernel has."""
    out = {}
    for link_id in libbpf.link_ids():
        try:
            fd = libbpf.link_fd_by_id(link_id)
        except libbpf.BpfError:
            continue
        with libbpf.fd_closing(fd):
            info = libbpf.link_info(fd)
        if info["type"] in ("xdp", "tcx"):
            out[info["prog_id"]] = info
    return out


def _entry(prog_id: int, via: str, managed: dict, links: dict, hook_id: str, **extra) -> dict:
    item = program(prog_id)
    owner = managed.get(prog_id)
    item.update(via=via, managed=bool(owner), deployment=owner[0] if owner else None)
    link = links.get(prog_id)
    if link and via in ("xdp_link", "tcx"):
        item["link_id"] = link["id"]
    item.update(extra)
    if owner and owner[1] != hook_id:
        item["pinned_for"] = owner[1]
    return item


def _tail_called(state_dir: str, pin_root: str, hook_id: str, first_id: int, managed: dict, links: dict) -> list:
    """The rest of the collection's chain behind first_id, from the hook's record (positions 2..N)."""
    rec = records.read_hook(state_dir, hook_id) or {}
    if rec.get("pin_root") != pin_root:
        return []
    entries = rec.get("entries", [])
    if not entries or entries[0].get("prog_id") != first_id:
        return []
    return [_entry(e["prog_id"], "tail_call", managed, links, hook_id, position=pos + 2) for pos, e in enumerate(entries[1:]) if e.get("prog_id")]


def xdp_programs(ifname: str, ifindex: int, ctx: dict) -> dict:
    try:
        state = xdp_hook.query(ifindex)
    except libbpf.BpfError as exc:
        return {"mode": None, "programs": [], "error": str(exc)}
    hook_id = bpffs.hook_id("xdp", ifname)
    progs = []
    for key, mode in (("native_id", "native"), ("generic_id", "generic"), ("offload_id", "offload")):
        prog_id = state.get(key)
        if not prog_id:
            continue
        link = ctx["links"].get(prog_id)
        via = "xdp_link" if link and link.get("ifindex") == ifindex else "netlink"
        progs.append(_entry(prog_id, via, ctx["managed"], ctx["links"], hook_id, mode=mode, position=1))
        progs += _tail_called(ctx["state_dir"], ctx["pin_root"], hook_id, prog_id, ctx["managed"], ctx["links"])
    return {"mode": state.get("mode"), "programs": progs}


def tc_programs(ifname: str, ifindex: int, hook: str, ctx: dict) -> list:
    hook_id = bpffs.hook_id(hook, ifname)
    progs = []
    try:
        tcx_ids = libbpf.prog_query(ifindex, attach.TCX_ATTACH[hook])
    except libbpf.BpfError:
        tcx_ids = []
    for pos, prog_id in enumerate(tcx_ids):
        progs.append(_entry(prog_id, "tcx", ctx["managed"], ctx["links"], hook_id, tcx_position=pos + 1))
        progs += _tail_called(ctx["state_dir"], ctx["pin_root"], hook_id, prog_id, ctx["managed"], ctx["links"])
    try:
        filters = attach.clsact_filters(ifindex, hook)
    except Exception:  # pylint: disable=broad-except
        filters = []
    for prio, handle, name, prog_id in sorted(filters):
        if not prog_id:
            continue
        progs.append(_entry(prog_id, "clsact", ctx["managed"], ctx["links"], hook_id, pref=prio, handle=handle, filter_name=name))
        progs += _tail_called(ctx["state_dir"], ctx["pin_root"], hook_id, prog_id, ctx["managed"], ctx["links"])
    return progs


def interfaces(names: list, pin_root: str, state_dir: str) -> dict:
    """Per interface (all of this network namespace when names is empty): XDP and TC programs."""
    ctx = {"managed": managed_programs(pin_root), "links": links_by_prog(), "pin_root": pin_root, "state_dir": state_dir}
    known = {name: index for index, name in socket.if_nameindex()}
    out = {}
    for ifname in names or sorted(known):
        ifindex = known[ifname]
        out[ifname] = {"ifindex": ifindex, "xdp": xdp_programs(ifname, ifindex, ctx)}
        for hook in TC_HOOKS:
            out[ifname][hook] = tc_programs(ifname, ifindex, hook, ctx)
    return out


# ---------------------------------------------------------------- maps


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _raw_entries(fd: int, info: dict, per_cpu: str, limit: int) -> list:
    """Keys and values in hex, for maps the typed codec cannot read.

    Per-CPU values: without types nothing tells a counter from an id or a timestamp, so nothing is added up:
    one hex value when every CPU holds the same bytes, else the list of per-CPU values."""
    keys, values, count = map_types.read_all(fd, info)
    key_size = info["key_size"]
    vsize = map_types.value_buf_size(info["type"], info["value_size"])
    stride = map_types.per_cpu_stride(info["value_size"])
    out = []
    for idx in range(min(count, limit)):
        key, value = keys[idx * key_size : (idx + 1) * key_size], values[idx * vsize : (idx + 1) * vsize]
        if info["type"] not in map_types.PERCPU:
            out.append({"key": _hex(key), "value": _hex(value)})
            continue
        cpus = [_hex(value[i : i + info["value_size"]]) for i in range(0, vsize, stride)]
        out.append({"key": _hex(key), "value": cpus[0] if per_cpu == "sum" and len(set(cpus)) == 1 else cpus})
    return out


def object_types(state_dir: str, deployment: str, cache: dict = None):
    """(BTF blob, parsed Btf) of a deployment's recorded object, or None (no record, a bcc source, no BTF)."""
    if cache is not None and deployment in cache:
        return cache[deployment]
    found = None
    path = records.object_path(state_dir, deployment)
    if HAS_MAP_CODEC and os.path.isfile(path):
        try:
            with libbpf.BpfObject.open(path) as obj:
                raw = obj.btf_raw()
            if raw:
                found = (raw, btf_mod.Btf.parse(raw))
        except (libbpf.BpfError, ValueError, OSError):
            found = None
    if cache is not None:
        cache[deployment] = found
    return found


def _recorded_definition(types, map_name: str, info: dict):
    """The map's key and value types from its object when the kernel holds none for it (libbpf creates a
    map without BTF when the kernel refuses its types, e.g. an enum as an array's key: lb_stats)."""
    if types is None or (info.get("btf_key_type_id") and info.get("btf_value_type_id")):
        return None
    try:
        definition = btf_mod.map_definition(types[1], map_name)
    except (KeyError, ValueError):
        return None
    if (definition["key_size"], definition["value_size"]) != (info["key_size"], info["value_size"]):
        return None  # the pinned map is not the recorded object's
    return definition


def map_entries(fd: int, info: dict, per_cpu: str = "sum", limit: int = 1000, types=None, map_name: str = "") -> dict:
    """{'entries': [...], 'notation': typed|hex, 'truncated': bool} of one map.

    types: the deployment's recorded object (object_types), which types the maps the kernel holds no BTF for."""
    if info["type"] in map_types.NO_DATA:
        return {"entries": [], "notation": None, "truncated": False, "note": "%s maps hold no readable data" % info["type"]}
    if HAS_MAP_CODEC:
        definition = _recorded_definition(types, map_name or info["name"], info)
        try:
            if definition is not None:
                entries = map_codec.read_entries(fd, per_cpu, types[0], definition)
            else:
                entries = map_codec.read_entries(fd, per_cpu=per_cpu)
            return {"entries": entries[:limit], "notation": "typed", "truncated": len(entries) > limit}
        except Exception:  # pylint: disable=broad-except
            pass  # a map the codec does not know: raw hex below
    entries = _raw_entries(fd, info, per_cpu, limit + 1)
    return {"entries": entries[:limit], "notation": "hex", "truncated": len(entries) > limit}


def pinned_map(path: str, contents: bool, per_cpu: str, limit: int, types=None) -> dict:
    try:
        fd = libbpf.obj_get(path)
    except libbpf.BpfError as exc:
        return {"error": str(exc)}
    with libbpf.fd_closing(fd):
        info = libbpf.map_info(fd)
        item = {key: info[key] for key in ("id", "type", "key_size", "value_size", "max_entries", "map_flags")}
        item["pin"] = path
        if contents:
            item.update(map_entries(fd, info, per_cpu, limit, types, os.path.basename(path)))
    return item


# ---------------------------------------------------------------- deployments


def deployments(pin_root: str, state_dir: str, contents: bool = False, per_cpu: str = "sum", limit: int = 1000) -> dict:
    """This collection's deployments: records (versions, options) and pins (programs, maps)."""
    names = set(records.list_deployments(state_dir))
    if os.path.isdir(pin_root):
        names |= {n for n in os.listdir(pin_root) if n != "_hooks" and os.path.isdir(os.path.join(pin_root, n))}
    out = {}
    for name in sorted(names):
        rec = records.read_deployment(state_dir, name) or {}
        item = {
            "recorded": bool(rec),
            "hook": rec.get("hook"),
            "interfaces": rec.get("interfaces", []),
            "program": rec.get("program"),
            "priority": rec.get("priority"),
            "mode": rec.get("mode"),
            "compiler": rec.get("compiler"),
            "object_sha256": rec.get("object_sha256"),
            "version": rec.get("version"),
            "versions": rec.get("versions", []),
            "updated": rec.get("updated"),
            "programs": {},
            "maps": {},
        }
        folder = os.path.join(pin_root, name)
        progs = os.path.join(folder, "progs")
        for hook_id in sorted(os.listdir(progs)) if os.path.isdir(progs) else []:
            try:
                fd = libbpf.obj_get(os.path.join(progs, hook_id))
            except libbpf.BpfError as exc:
                item["programs"][hook_id] = {"error": str(exc)}
                continue
            with libbpf.fd_closing(fd):
                pinfo = libbpf.prog_info(fd)
            item["programs"][hook_id] = {"id": pinfo["id"], "name": pinfo["name"], "tag": pinfo["tag"], "type": pinfo["type"]}
        maps = os.path.join(folder, "maps")
        types = object_types(state_dir, name) if contents and rec else None
        for map_name in sorted(os.listdir(maps)) if os.path.isdir(maps) else []:
            item["maps"][map_name] = pinned_map(os.path.join(maps, map_name), contents, per_cpu, limit, types)
        out[name] = item
    return out


# ---------------------------------------------------------------- counters

MAX_COUNTER_KEYS = 65536
VERDICTS = ("pass", "drop", "tx", "redirect", "aborted")
VERDICT_MEMBERS = ("verdict", "outcome")


def counter_label(key) -> str:
    """A counter key by name: its parts joined (port_drop, 3_paced), or the enum name (syn)."""
    if isinstance(key, dict):
        return "_".join(str(part) for part in key.values())
    return str(key)


def verdict_of(key):
    """The verdict a counter key names (its verdict or outcome part, or a pass_/drop_/tx enum name), or None."""
    if isinstance(key, dict):
        for member in VERDICT_MEMBERS:
            if member in key:
                return str(key[member])
        return None
    first = str(key).split("_", 1)[0]
    return first if first in VERDICTS else None


def counters(pin_root: str, state_dir: str, name: str, limit: int = MAX_COUNTER_KEYS) -> dict:
    """{map: {'counters': {label: {packets, bytes}}, 'verdicts': {verdict: packets}}} of the deployment's pinned
    maps whose values are counters (struct fleet_counter: filter_stats, lb_stats, egress_stats), summed over CPUs."""
    out = {}
    folder = os.path.join(bpffs.deployment_dir(pin_root, name), "maps")
    if not os.path.isdir(folder):
        return out
    types = object_types(state_dir, name)
    for map_name in sorted(os.listdir(folder)):
        if "_tmp" in map_name:
            continue
        item = pinned_map(os.path.join(folder, map_name), True, "sum", limit, types)
        entries = item.get("entries") or []
        if item.get("notation") != "typed" or not entries:
            continue
        found, by_verdict = {}, {}
        for entry in entries:
            value = entry.get("value")
            if not (isinstance(value, dict) and isinstance(value.get("packets"), int) and isinstance(value.get("bytes"), int)):
                found = None
                break  # not a map of counters
            found[counter_label(entry["key"])] = {"packets": value["packets"], "bytes": value["bytes"]}
            verdict = verdict_of(entry["key"])
            if verdict is not None:
                by_verdict[verdict] = by_verdict.get(verdict, 0) + value["packets"]
        if found is not None:
            out[map_name] = {"counters": found, "verdicts": by_verdict}
    return out
