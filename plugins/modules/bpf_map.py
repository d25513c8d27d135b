#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bpf_map
short_description: Declare the contents of a pinned BPF map
description:
  - Brings a pinned BPF map to the declared contents. Keys and values are written in the operator's notation and
    converted through the map's BTF (struct members by name, enums by name, IPv4/IPv6 addresses, CIDRs for LPM-trie
    keys, MAC addresses, flags, arrays, strings); raw hex bytes work for any key or value and for maps without BTF.
    See docs/maps.md for the notation.
  - Reads the current contents with one batch lookup (one element at a time only for map types without batch
    support), compares as bytes, and applies only the difference with batch updates and deletes.
  - Every entry is validated before anything is written (its types, an array index below the map's
    C(max_entries), no more elements than a hash or trie holds, no enum end marker such as C(max) as a value);
    one bad entry fails the task with its index or line and the reason, and the map is untouched.
  - A declared all-zero value is compared like any other (in an array it is what an element holds when nothing
    was written), so every declaration converges to C(changed=false) on the second run.
  - In check mode a map that is not pinned yet (a host never deployed, or rebooted) is not an error; the entries
    are typed through the deployment's recorded object when there is a record, else predicted as added as
    declared; RV(predicted_from) says which. Check mode writes nothing.
  - After a successful run (not in check mode) the declared contents are recorded in the deployment's record
    folder under I(state_dir) (C(<state_dir>/<name>/maps/<map>.entries), as the bytes the kernel stores).
    V(sync) records the whole set, V(merge) adds to the recorded set, V(absent) removes its keys from it and
    V(clear) forgets the map. The host restores these contents at boot; maps nobody declares (counters,
    connection tables) are never recorded. Only deployments with a record (deployed by M(ebpf.fleet.xdp_program)
    or M(ebpf.fleet.tc_program)) are recorded.
  - For a one-slot array or hash of maps (a rule set a program reads as one unit) the entries describe the inner
    map; a new inner map is filled and swapped into slot 0 with one update, so a packet sees the whole old set or
    the whole new set.
version_added: "0.1.0"
author: ebpf.fleet contributors (@ebpf-fleet)
extends_documentation_fragment:
  - ebpf.fleet.attributes
  - ebpf.fleet.paths
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    support: full
    platforms: linux
options:
  name:
    description:
      - Deployment that owns the map; the map is pinned at I(pin_root)/I(name)/maps/I(map).
      - Give I(name) and I(map), I(name) and I(maps), or I(path).
    type: str
  map:
    description: Name of the map in the deployment.
    type: str
  maps:
    description:
      - Several maps of the deployment I(name) in one task, in the order given. Every map is read and every
        entry checked against its map (types, capacity, the pin existing) before any map is written, so one bad
        declaration leaves all of them untouched; then they are written one after the other.
      - Each item takes the per-map options below; I(per_cpu), I(diff_limit), I(pin_root) and I(state_dir) apply
        to all of them, and I(value) and I(mode) are the defaults of items that give none.
      - Mutually exclusive with I(map), I(path), I(entries), I(entries_file) and I(entries_src).
    type: list
    elements: dict
    version_added: 0.1.0
    suboptions:
      map:
        description: Name of the map in the deployment.
        type: str
        required: true
      entries:
        description: As I(entries) above; mutually exclusive with the item's I(entries_file) and I(entries_src) (a
          null value counts as not given).
        type: raw
      entries_file:
        description: As I(entries_file) above.
        type: path
      entries_src:
        description: As I(entries_src) above (copied by the action plugin).
        type: path
      entries_format:
        description: As I(entries_format) above.
        type: str
        choices: [auto, lines, json, yaml]
        default: auto
      value:
        description: As I(value) above; defaults to the task's I(value).
        type: raw
      mode:
        description: As I(mode) above; defaults to the task's I(mode).
        type: str
        choices: [merge, sync, absent, clear]
      clear:
        description: As I(clear) above.
        type: bool
        default: false
  path:
    description: Pin path of the map, instead of I(name) and I(map).
    type: path
  entries:
    description:
      - "The entries, as a dict of key to value, or a list whose items are C({key: ..., value: ...}), a one-item
        dict C(key: value), or a bare key."
      - A missing or null value means I(value) (all zero bytes when I(value) is not given).
      - Mutually exclusive with I(entries_file) and I(entries_src).
    type: raw
  entries_file:
    description:
      - A file on the managed host with the entries (copy it there first, for example with M(ansible.builtin.copy)).
      - C(.json) and C(.yml)/C(.yaml) files hold the same structure as I(entries); any other file is a plain list
        of keys, one per line (for example CIDRs), with C(#) comments; every line gets I(value).
    type: path
  entries_src:
    description:
      - A file on the controller with the entries, in the formats of I(entries_file); the module's action plugin
        copies it to the host's temporary folder for the task, so a million entries never travel as task
        arguments. Relative paths are looked up like M(ansible.builtin.copy)'s C(src) (C(files/) of the role or
        playbook).
      - Mutually exclusive with I(entries) and I(entries_file).
    type: path
    version_added: 0.1.0
  entries_format:
    description: How to read I(entries_file); C(auto) decides by the file's extension.
    type: str
    choices: [auto, lines, json, yaml]
    default: auto
  value:
    description: The value of entries that give none (every line of a plain list, null values).
    type: raw
  mode:
    description:
      - C(merge) adds and updates the given entries and leaves the others.
      - C(sync) makes the map hold exactly the given entries.
      - C(absent) deletes the given keys (values are ignored).
      - C(clear) deletes every entry (for arrays, which cannot delete, every element becomes zero).
    type: str
    choices: [merge, sync, absent, clear]
    default: merge
  clear:
    description: Empty the whole map (the same as I(mode=clear)).
    type: bool
    default: false
  per_cpu:
    description:
      - How values of per-CPU maps are shown in the output. V(list) gives one value per CPU; V(sum) adds up the
        counters over CPUs (members of C(struct fleet_counter), plain unsigned integers) and shows any other
        member once when every CPU holds the same value, else one per CPU.
    type: str
    choices: [sum, list]
    default: sum
  diff_limit:
    description: At most this many added, changed and removed entries each are listed in the output.
    type: int
    default: 100
notes:
  - Arrays cannot delete elements; there an absent element is an all-zero one.
  - For very large sets prefer a plain list or JSON file over YAML.
  - Files of entries nested deeper than 64 levels, YAML whose aliases expand it more than 16 times, YAML scalars
    over 65536 characters and files over 1 GiB are refused with a short message naming the file (and line);
    error messages show values shortened to at most 200 characters.
"""

EXAMPLES = r"""
- name: Deny these prefixes (LPM trie keyed by struct fleet_lpm_v4)
  ebpf.fleet.bpf_map:
    name: filter
    map: deny_v4
    mode: sync
    entries:
      198.51.100.0/24: drop
      192.0.2.0/24: drop

- name: A virtual service, struct key and value by member name
  ebpf.fleet.bpf_map:
    name: lb
    map: vips
    entries:
      - key: {vip: 192.0.2.10, port: 443, proto: 6}
        value: {backend: 2001:db8::10, weight: 3}

- name: A million-line block list copied from the controller
  ebpf.fleet.bpf_map:
    name: filter
    map: deny_v4
    entries_file: /var/lib/ebpf_fleet/deny_v4.txt
    value: drop
    mode: sync

- name: A million CIDRs from a file on the controller (copied for the task, not passed as arguments)
  ebpf.fleet.bpf_map:
    name: filter
    map: deny_v4
    entries_src: files/deny_v4.txt
    value: drop
    mode: sync

- name: Every map of a deployment in one task (all checked before any is written)
  ebpf.fleet.bpf_map:
    name: filter
    mode: sync
    maps:
      - map: filter_mgmt_v4
        entries: [192.0.2.0/24]
        value: 1
      - map: deny_v4
        entries_src: files/deny_v4.txt
        value: drop
      - map: filter_config
        entries: {0: {default_verdict: pass}}

- name: Remove two keys
  ebpf.fleet.bpf_map:
    path: /sys/fs/bpf/ebpf_fleet/filter/maps/deny_v4
    mode: absent
    entries: [198.51.100.0/24, 192.0.2.0/24]

- name: Empty a map
  ebpf.fleet.bpf_map:
    name: filter
    map: deny_v4
    clear: true
"""

RETURN = r"""
maps:
  description:
    - With I(maps), the result of each map in the order given, with the keys below (RV(map), RV(counts),
      RV(applied), RV(changes), ...) and C(changed); the task's RV(applied) is their sum.
    - On a failure while writing, the maps written before the failing one.
  returned: when I(maps) is given
  type: list
  elements: dict
  sample: [{"map": {"path": "/sys/fs/bpf/ebpf_fleet/filter/maps/filter_mgmt_v4"}, "changed": false, "applied": 0}]
map:
  description: The map that was managed.
  returned: success, without I(maps)
  type: dict
  sample: {"path": "/sys/fs/bpf/ebpf_fleet/filter/maps/deny_v4", "id": 42, "type": "lpm_trie",
           "key_size": 8, "value_size": 4, "max_entries": 1000000, "inner_map_id": null}
counts:
  description: How many entries were added, changed, removed and left alone, the desired count, and the count before.
  returned: success
  type: dict
  sample: {"added": 2, "changed": 0, "removed": 1, "unchanged": 10, "desired": 12, "before": 11}
applied:
  description: Elements written or deleted in the kernel (0 in check mode or when nothing differed).
  returned: always
  type: int
  sample: 3
msg:
  description: Why the result is a prediction (check mode with the map not pinned yet).
  returned: when the map does not exist yet, in check mode
  type: str
  sample: "check mode: /sys/fs/bpf/ebpf_fleet/filter/maps/filter_v4 is not pinned yet and the deployment has no record; ..."
swapped:
  description: True when a new inner map was filled and swapped into a map of maps.
  returned: success
  type: bool
  sample: false
predicted_from:
  description:
    - Only in check mode when the map is not pinned yet. V(record) when the entries were typed through the map's
      definition in the deployment's recorded object (after a reboot), V(declaration) when there is no record
      (first deploy) and every declared entry is predicted as added, as declared and unchecked.
  returned: when the map does not exist yet, in check mode
  type: str
  sample: declaration
recorded:
  description:
    - The file in the deployment's record folder under I(state_dir) that holds the map's declared contents, from
      which the host restores the map after a reboot (C(ebpf-fleet-host restore), docs/restore.md); null when
      nothing is recorded (check mode, a map of a deployment without a record, C(clear), or a map whose
      values are kernel references such as a program array or a device map).
  returned: success
  type: str
  sample: /var/lib/ebpf_fleet/filter/maps/filter_v4.entries
changes:
  description:
    - Added, changed and removed entries in the operator's notation, at most I(diff_limit) of each.
    - A changed entry holds its key and the value before and after.
  returned: success
  type: dict
  sample: {"added": [{"key": "198.51.100.0/24", "value": "drop"}], "changed": [],
           "removed": [{"key": "192.0.2.0/24", "value": "drop"}]}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ebpf.fleet.plugins.module_utils import shared_options

try:
    from ansible_collections.ebpf.fleet.plugins.module_utils import errors, validate
    from ansible_collections.ebpf.fleet.plugins.module_utils.host import records
    from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
    from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_records, map_sync
    from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import CodecError, MapCodec

    HAS_DEPS = True
    DEPS_ERROR = None
except ImportError as import_exc:  # pragma: no cover - the collection's own code is always there
    HAS_DEPS = False
    DEPS_ERROR = import_exc


def argument_spec() -> dict:
    return dict(
        name=dict(type="str"),
        map=dict(type="str"),
        path=dict(type="path"),
        entries=dict(type="raw"),
        entries_file=dict(type="path"),
        entries_src=dict(type="path"),
        entries_format=dict(type="str", choices=["auto", "lines", "json", "yaml"], default="auto"),
        maps=dict(
            type="list",
            elements="dict",
            options=dict(
                map=dict(type="str", required=True),
                entries=dict(type="raw"),
                entries_file=dict(type="path"),
                entries_src=dict(type="path"),
                entries_format=dict(type="str", choices=["auto", "lines", "json", "yaml"], default="auto"),
                value=dict(type="raw"),
                mode=dict(type="str", choices=["merge", "sync", "absent", "clear"]),
                clear=dict(type="bool", default=False),
            ),
        ),
        value=dict(type="raw"),
        mode=dict(type="str", choices=["merge", "sync", "absent", "clear"], default="merge"),
        clear=dict(type="bool", default=False),
        per_cpu=dict(type="str", choices=["sum", "list"], default="sum"),
        diff_limit=dict(type="int", default=100),
        **shared_options.argument_spec(),  # pin_root, state_dir (doc fragment ebpf.fleet.paths)
    )


def build_module() -> AnsibleModule:
    return AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[
            ("path", "name"),
            ("path", "map"),
            ("entries", "entries_file"),
            ("entries", "entries_src"),
            ("maps", "map"),
            ("maps", "path"),
            ("maps", "entries"),
            ("maps", "entries_file"),
            ("maps", "entries_src"),
        ],
        required_by={"map": "name"},
        required_one_of=[("path", "name")],
    )


def map_path(params: dict) -> str:
    if params["path"]:
        return params["path"]
    bpffs.check_name("map", params["map"])
    return bpffs.map_pin(params["pin_root"], params["name"], params["map"])


def _missing_map_message(path: str) -> str:
    folder = os.path.dirname(path)
    if os.path.isdir(folder):
        names = sorted(os.listdir(folder))
        return "map pin %s does not exist; maps in %s: %s" % (path, folder, ", ".join(names) or "none")
    return "map pin %s does not exist (no folder %s: is the deployment loaded, and the pin_root right?)" % (path, folder)


def _report(codec: MapCodec, the_plan, limit: int, per_cpu: str) -> dict:
    dk, dv = codec.decode_key, codec.decode_value

    def value_of(data):
        return None if data is None else dv(data, per_cpu)

    return {
        "added": [{"key": dk(k), "value": value_of(the_plan.desired[k])} for k in the_plan.added[:limit]],
        "changed": [{"key": dk(k), "before": value_of(the_plan.current[k]), "after": value_of(the_plan.desired[k])} for k in the_plan.changed[:limit]],
        "removed": [{"key": dk(k), "value": value_of(the_plan.current.get(k))} for k in the_plan.removed[:limit]],
    }


def _diff_text(changes: dict, counts: dict) -> dict:
    def line(key, value):
        return "%s: %s" % (key, value)

    before, after = [], []
    for item in changes["removed"]:
        before.append(line(item["key"], item["value"]))
    for item in changes["changed"]:
        before.append(line(item["key"], item["before"]))
        after.append(line(item["key"], item["after"]))
    for item in changes["added"]:
        after.append(line(item["key"], item["value"]))
    hidden_before = counts["removed"] + counts["changed"] - len(changes["removed"]) - len(changes["changed"])
    hidden_after = counts["added"] + counts["changed"] - len(changes["added"]) - len(changes["changed"])
    if hidden_before > 0:
        before.append("... and %d more" % hidden_before)
    if hidden_after > 0:
        after.append("... and %d more" % hidden_after)
    return {"before": "\n".join(before) + "\n" if before else "", "after": "\n".join(after) + "\n" if after else ""}


def desired_entries(module: AnsibleModule, codec: MapCodec, mode: str, progs) -> dict:
    memo = getattr(module, "memo", None)
    if memo is not None and progs is None:
        # a map of `maps`: encoded once, when it is checked, and reused when it is written
        if mode not in memo:
            memo[mode] = _desired_entries(module, codec, mode, progs)
        return memo[mode]
    return _desired_entries(module, codec, mode, progs)


def _desired_entries(module: AnsibleModule, codec: MapCodec, mode: str, progs) -> dict:
    params = module.params
    keys_only = mode == "absent"
    value_encoder = progs.encode if progs is not None else None
    if mode == "clear":
        if params["entries"] is not None or params["entries_file"]:
            raise CodecError("clear", "clearing empties the map: do not give entries or entries_file")
        return {}
    if params["entries_file"]:
        data, _fmt = map_sync.load_file(params["entries_file"], params["entries_format"])
        if data is None:
            return map_sync.encode_lines(codec, params["entries_file"], params["value"], keys_only, value_encoder)
        return map_sync.encode_entries(codec, data, params["entries_file"], params["value"], keys_only, value_encoder)
    return map_sync.encode_entries(codec, params["entries"], "entries", params["value"], keys_only, value_encoder)


def _entry_message(params: dict, exc: Exception) -> str:
    message = str(exc)
    if params.get("entries_src") and params.get("entries_file"):
        # name the operator's file, not its temporary copy on the host
        message = message.replace(params["entries_file"], params["entries_src"])
    return message


def _declared_items(module: AnsibleModule, mode: str) -> list:
    """(key, value) of every declared entry in the operator's notation, unchecked (no map to type them)."""
    params = module.params
    if mode == "clear":
        return []
    if params["entries_file"]:
        data, _fmt = map_sync.load_file(params["entries_file"], params["entries_format"])
        if data is None:
            _numbers, lines = map_sync.read_lines(params["entries_file"])
            return [(line, params["value"]) for line in lines]
    else:
        data = params["entries"]
    out = []
    for _where, key, value in map_sync.iter_entries(data, params["entries_file"] or "entries"):
        out.append((key, params["value"] if value is None else value))
    return out


def _recorded_codec(module: AnsibleModule):
    """The map's codec from the deployment's recorded object (after a reboot the pins are gone, the
    records stay), or None when there is no record, no object or no such map in it."""
    params = module.params
    if params["path"] or not params["name"]:
        return None
    state_dir = params.get("state_dir") or records.STATE_DIR_DEFAULT
    obj = records.object_path(state_dir, params["name"])
    if not os.path.isfile(obj):
        return None
    try:
        return map_sync.codec_from_object(obj, params["map"])
    except (libbpf.BpfError, ValueError, KeyError, OSError):
        return None


def _predict_missing(module: AnsibleModule, path: str, mode: str) -> dict:
    """Check mode with no map pinned: every declared entry is predicted as added (nothing can be removed
    from a map that does not exist yet), typed through the recorded object's BTF when there is a record."""
    params = module.params
    codec = _recorded_codec(module)
    result = {
        "changed": False,
        "applied": 0,
        "swapped": False,
        "map": {"path": path, "id": None, "type": None, "key_size": None, "value_size": None, "max_entries": None, "inner_map_id": None},
    }
    limit = params["diff_limit"]
    if codec is not None and codec.map_type != "prog_array":
        try:
            desired = desired_entries(module, codec, mode, None)
            the_plan = map_sync.plan({}, desired if mode != "absent" else {}, "sync", map_sync.absent_value(codec))
            after = len(the_plan.write)
            map_sync.check_capacity(codec, the_plan, after)
        except CodecError as exc:
            module.fail_json(msg="invalid entry, nothing was written: %s" % _entry_message(params, exc), applied=0)
        info = codec.info
        result["map"].update(type=info["type"], key_size=info["key_size"], value_size=info["value_size"], max_entries=info["max_entries"])
        counts = {
            "added": len(the_plan.added),
            "changed": 0,
            "removed": 0,
            "unchanged": len(desired) - len(the_plan.added) if mode != "absent" else 0,
            "desired": len(desired),
            "before": 0,
        }
        changes = _report(codec, the_plan, limit, params["per_cpu"])
        result["predicted_from"] = "record"
        result["msg"] = "check mode: %s is not pinned yet; entries typed through the deployment's recorded object" % path
    else:
        try:
            items = _declared_items(module, mode) if mode != "absent" else []
        except CodecError as exc:
            module.fail_json(msg="invalid entry, nothing was written: %s" % _entry_message(params, exc), applied=0)
        counts = {"added": len(items), "changed": 0, "removed": 0, "unchanged": 0, "desired": len(items), "before": 0}
        changes = {"added": [{"key": key, "value": value} for key, value in items[:limit]], "changed": [], "removed": []}
        result["predicted_from"] = "declaration"
        result["msg"] = (
            "check mode: %s is not pinned yet and the deployment has no record; every declared "
            "entry is predicted as added, in the declared notation (not checked against the map's "
            "types)" % path
        )
    result["changed"] = counts["added"] > 0
    result["counts"] = counts
    result["changes"] = changes
    if module._diff:
        result["diff"] = _diff_text(changes, counts)
    return result


def run(module: AnsibleModule) -> dict:
    params = module.params
    mode = "clear" if params["clear"] else params["mode"]
    if params["clear"] and params["mode"] not in ("merge", "clear"):
        module.fail_json(msg="clear=true empties the map; it cannot be combined with mode=%s" % params["mode"])
    if params["entries_src"] and not params["entries_file"]:
        # the action plugin turns entries_src into entries_file; without it the controller's file is out of reach
        module.fail_json(
            msg="entries_src=%s is a file on the controller: the bpf_map action plugin copies it; run "
            "the task through Ansible, or give entries_file (a path on the host)" % params["entries_src"]
        )
    if mode != "clear" and params["entries"] is None and not params["entries_file"]:
        module.fail_json(msg="mode=%s needs entries or entries_file (to empty the map, use clear=true)" % mode)
    if params["diff_limit"] < 0:
        module.fail_json(msg="diff_limit=%d: expected 0 or more" % params["diff_limit"])
    try:
        path = map_path(params)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    if not os.path.exists(path):
        if module.check_mode:
            # a host never deployed, or rebooted (pins gone): predict, from the deployment's record when there
            # is one, and write nothing
            return _predict_missing(module, path, mode)
        module.fail_json(msg=_missing_map_message(path), applied=0)
    try:
        fd = libbpf.obj_get(path)
    except libbpf.BpfError as exc:
        module.fail_json(msg="cannot open the pin %s: %s" % (path, exc), applied=0)
    try:
        return _run_fd(module, fd, path, mode)
    finally:
        os.close(fd)


def _read_target(module: AnsibleModule, fd: int, path: str):
    """read: the pinned map's info and, for a map of maps, its inner map's: (info, outer_info, target_fd)."""
    try:
        if map_sync.fd_kind(fd) != "map":
            raise libbpf.BpfError("bpf_obj_get_info_by_fd", 22)
        info = libbpf.map_info(fd)
    except libbpf.BpfError:
        module.fail_json(msg="%s is not a BPF map (a program or link is pinned there)" % path, applied=0)
    if info["type"] not in map_sync.SUPPORTED_MAPS:
        module.fail_json(
            msg="%s is a %s map, which has no key/value contents bpf_map can manage; supported types: %s"
            % (path, info["type"], ", ".join(sorted(map_sync.SUPPORTED_MAPS))),
            applied=0,
        )
    if info["type"] not in map_sync.OUTER_MAPS:
        return info, None, fd
    try:
        target_fd = map_sync.inner_map_fd(fd, info)
    except (map_sync.SyncError, libbpf.BpfError) as exc:
        module.fail_json(msg="%s: %s" % (path, exc), applied=0)
    return libbpf.map_info(target_fd), info, target_fd


def _plan(current: dict, desired: dict, mode: str, absent, outer: bool):
    """plan: the entries to add, change and remove; for a map of maps, the whole set the new inner map holds."""
    if not outer:
        return map_sync.plan(current, desired, mode, absent)
    if mode == "merge":
        target = dict(current)
        target.update(desired)
    elif mode == "absent":
        target = {k: v for k, v in current.items() if k not in desired}
    else:
        target = desired
    return map_sync.plan(current, target, "sync")


def _counts(the_plan, before: int, desired: dict, mode: str, absent, current: dict = None) -> dict:
    counts = {
        "added": len(the_plan.added),
        "changed": len(the_plan.changed),
        "removed": len(the_plan.removed),
        "desired": len(desired),
        "before": before,
    }
    counts["unchanged"] = before - counts["changed"] - counts["removed"]
    if absent is not None and mode not in ("absent", "clear"):
        # declared elements that hold the all-zero value an array element has when nothing was written
        counts["unchanged"] += sum(1 for k in desired if k not in current) - counts["added"]
    return counts


def _apply(module: AnsibleModule, fd: int, target_fd: int, path: str, outer_info, codec: MapCodec, the_plan, progs, result: dict) -> None:
    """apply: swap in a new inner map, or write and delete the planned entries; fills result's applied/swapped."""
    try:
        if the_plan.empty:
            pass
        elif outer_info is not None:
            new_info = map_sync.swap_inner(fd, outer_info, codec, the_plan.desired)
            result["applied"] = len(the_plan.desired)
            result["swapped"] = True
            result["map"]["inner_map_id"] = new_info["id"]
        else:
            result["applied"] = map_sync.apply(target_fd, codec, the_plan, progs)
    except map_sync.SyncError as exc:
        module.fail_json(msg="%s: %s" % (path, exc), applied=exc.applied, changed=exc.applied > 0, counts=result["counts"])
    except libbpf.BpfError as exc:
        module.fail_json(msg="%s: %s" % (path, exc), applied=0, counts=result["counts"])


def _run_fd(module: AnsibleModule, fd: int, path: str, mode: str) -> dict:
    """read the map -> desired entries -> plan -> apply (not in check mode) -> record the declaration."""
    params = module.params
    info, outer_info, target_fd = _read_target(module, fd, path)
    outer = outer_info is not None
    progs = map_sync.ProgRefs() if info["type"] == "prog_array" else None
    try:
        codec = MapCodec.for_fd(target_fd)
        reader = map_sync.Reader(target_fd, codec)
        reader.start()
        try:
            desired = desired_entries(module, codec, mode, progs)
        except CodecError as exc:
            module.fail_json(msg="invalid entry, nothing was written: %s" % _entry_message(params, exc), applied=0)
        try:
            raw = reader.result()
        except libbpf.BpfError as exc:
            module.fail_json(msg="cannot read %s: %s" % (path, exc), applied=0)
        absent = map_sync.absent_value(codec) if not outer else None
        if outer or absent is not None:
            current = map_sync.current_from_raw(codec, *raw)
            the_plan = _plan(current, desired, mode, absent, outer)
            counts = _counts(the_plan, len(current), desired, mode, absent, current)
        else:
            # compared as the bytes read, without a dict of the current contents
            the_plan = map_sync.plan_raw(codec, raw, desired, mode)
            counts = _counts(the_plan, raw[2], desired, mode, absent)
        del raw
        try:
            after = len(the_plan.desired) if outer else counts["before"] + counts["added"] - counts["removed"]
            if not outer or info["type"] not in map_sync.GROWABLE_INNER_MAPS:
                map_sync.check_capacity(codec, the_plan, after)
        except CodecError as exc:
            module.fail_json(msg="invalid entry, nothing was written: %s" % exc, applied=0)
        changes = _report(codec, the_plan, params["diff_limit"], params["per_cpu"])
        result = {
            "changed": not the_plan.empty,
            "map": {
                "path": path,
                "id": (outer_info or info)["id"],
                "type": (outer_info or info)["type"],
                "key_size": info["key_size"],
                "value_size": info["value_size"],
                "max_entries": info["max_entries"],
                "inner_map_id": info["id"] if outer else None,
            },
            "counts": counts,
            "applied": 0,
            "swapped": False,
            "changes": changes,
            "recorded": None,
        }
        if module._diff:
            result["diff"] = _diff_text(changes, counts)
        if module.check_mode:
            return result
        _apply(module, fd, target_fd, path, outer_info, codec, the_plan, progs, result)
        # the kernel holds the declaration: record it for the host's restore (only now, never in check mode)
        if outer:
            declared, record_mode = the_plan.desired, ("clear" if mode == "clear" else "sync")
        else:
            declared, record_mode = desired, mode
        result["recorded"] = record_declaration(params, path, record_mode, declared, codec, outer)
        return result
    finally:
        if progs is not None:
            progs.close()
        if target_fd != fd:
            os.close(target_fd)


class _OneMap:
    """One item of `maps`, seen by run() as a module: the item's options over the task's, its own check mode,
    and failures that name the item (and the maps already written)."""

    def __init__(self, module: AnsibleModule, index: int, params: dict, check_mode: bool, memo: dict, written: list):
        self._module, self._index, self._written = module, index, written
        self.params, self.check_mode, self.memo = params, check_mode, memo
        self._diff = module._diff

    def fail_json(self, msg: str, **kwargs):
        where = "maps[%d] (%s): %s" % (self._index, self.params["map"], msg)
        if self._written:
            where += " (written before it: %s)" % ", ".join(item["map"]["path"].rsplit("/", 1)[-1] for item in self._written)
        kwargs.setdefault("applied", 0)
        kwargs["applied"] += sum(item["applied"] for item in self._written)
        kwargs["changed"] = kwargs.get("changed", False) or any(item["changed"] for item in self._written)
        self._module.fail_json(msg=where, maps=self._written, **kwargs)


def run_maps(module: AnsibleModule) -> dict:
    """`maps`: every map checked as in check mode (pin, types, capacity) before any is written, then written
    in the order given."""
    params = module.params
    if not params["maps"]:
        module.fail_json(msg="maps=[]: expected at least one map (or give map)")
    if params["clear"]:
        module.fail_json(msg="clear=true with maps: give clear (or mode=clear) on each item that is emptied")
    items = []
    for index, item in enumerate(params["maps"]):
        given = [field for field in ("entries", "entries_file", "entries_src") if item[field] is not None]
        if len(given) > 1 and given != ["entries_file", "entries_src"]:  # the action plugin adds entries_file
            module.fail_json(msg="maps[%d] (%s): %s are mutually exclusive; give one" % (index, item["map"], " and ".join(given)))
        merged = {key: value for key, value in params.items() if key != "maps"}
        merged.update({key: value for key, value in item.items() if value is not None})
        merged["mode"] = item["mode"] or params["mode"]
        validate.check_name("maps[%d].map" % index, item["map"])  # an InputError: failing() reports it
        path = map_path(merged)
        if not module.check_mode and not os.path.exists(path):
            module.fail_json(msg="maps[%d] (%s): %s; nothing was written" % (index, item["map"], _missing_map_message(path)), applied=0)
        items.append((index, merged, {}))
    checked = [run(_OneMap(module, index, merged, True, memo, [])) for index, merged, memo in items]
    if module.check_mode:
        done = checked
    else:
        done = []
        for index, merged, memo in items:
            done.append(run(_OneMap(module, index, merged, False, memo, done)))
    result = {"changed": any(item["changed"] for item in done), "applied": sum(item["applied"] for item in done), "maps": done}
    if module._diff:
        result["diff"] = [dict(item.pop("diff"), before_header=item["map"]["path"], after_header=item["map"]["path"]) for item in done if "diff" in item]
    return result


def record_target(params: dict, path: str):
    """(deployment, map) whose declaration is recorded: name and map, or a path in the pin_root layout."""
    if params["name"]:
        return params["name"], params["map"]
    maps_dir = os.path.dirname(os.path.abspath(path))
    dep_dir = os.path.dirname(maps_dir)
    if os.path.basename(maps_dir) == "maps" and os.path.dirname(dep_dir) == os.path.abspath(params["pin_root"]):
        return os.path.basename(dep_dir), os.path.basename(path)
    return None, None


def record_declaration(params: dict, path: str, mode: str, declared: dict, codec: MapCodec, outer: bool):
    """Fold this run's declaration into the deployment's record of the map; the record's path or None."""
    name, map_name = record_target(params, path)
    if not name:
        return None
    state_dir = params.get("state_dir") or records.STATE_DIR_DEFAULT
    with records.locked(state_dir, create=False):
        return map_records.update(state_dir, name, map_name, mode, declared, codec.key_size, codec.value_buf_size, codec.map_type, outer)


def main() -> None:
    module = build_module()
    if not HAS_DEPS:
        module.fail_json(msg="the collection's module_utils could not be imported: %s" % DEPS_ERROR)
    if not libbpf.available():
        module.fail_json(msg="libbpf 1.x is required on the host (Debian/Ubuntu package %s)" % libbpf.LIBBPF_PACKAGE)
    with errors.failing(module):
        validate.check_params(module.params)  # name, map, pin_root, path: refused before anything is opened
        if module.params["name"] and not module.params["map"] and module.params["maps"] is None:
            module.fail_json(msg="name=%s needs map (one map) or maps (several): expected the map's name in the deployment" % module.params["name"])
        result = run_maps(module) if module.params["maps"] is not None else run(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
