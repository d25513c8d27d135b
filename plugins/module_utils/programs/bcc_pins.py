# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bcc deployment's program and maps from its pins (``compiler: bcc``, see bcc_load.py).

* pinned: the program an earlier run pinned, reused when another deployment changes the chain (no compile);
* carry_over: on an upgrade bcc creates new maps (it cannot be handed the pinned ones), so the entries of every
  pinned map whose layout matches the new map's are copied into it before the swap; a changed layout fails
  unless ``replace_incompatible_maps`` is set.
"""

from __future__ import annotations

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_types
from ansible_collections.ebpf.fleet.plugins.module_utils.programs.bcc_load import BccError, Loaded


def pinned(prog_pin: str):
    """The program an earlier run pinned (reused when another deployment changes the chain), or None."""
    try:
        fd = libbpf.obj_get(prog_pin)
    except libbpf.BpfError:
        return None
    return Loaded.from_fd(fd, with_maps=False)


def layout(info: dict) -> dict:
    return {key: info.get(key) for key in ("type", "key_size", "value_size", "max_entries", "map_flags")}


def copy_entries(src_fd: int, dst_fd: int) -> int:
    """Copy every entry of one map into another of the same layout; returns how many."""
    info = libbpf.map_info(src_fd)
    keys, values, count = map_types.read_all(src_fd, info)
    key_size, value_size = info["key_size"], map_types.value_buf_size(info["type"], info["value_size"])
    for idx in range(count):
        libbpf.map_update(dst_fd, keys[idx * key_size : (idx + 1) * key_size], values[idx * value_size : (idx + 1) * value_size])
    return count


def carry_over(old_maps: dict, new_maps: dict, replace_incompatible: bool) -> dict:
    """Copy the pinned maps' entries into the new bcc maps where layouts match; report like check_maps."""
    report = {"reused": [], "created": [], "incompatible": [], "obsolete": []}
    for name, new_fd in sorted(new_maps.items()):
        old_fd = old_maps.get(name)
        if old_fd is None:
            report["created"].append(name)
            continue
        old, new = layout(libbpf.map_info(old_fd)), layout(libbpf.map_info(new_fd))
        if old != new:
            diffs = ["%s %s != %s" % (key, old[key], new[key]) for key in old if old[key] != new[key]]
            report["incompatible"].append({"map": name, "differences": diffs})
            if not replace_incompatible:
                raise BccError(
                    "maps are incompatible with the new program: %s (%s); set replace_incompatible_maps: "
                    "true to replace it (its contents are lost)" % (name, ", ".join(diffs))
                )
            continue
        if old_fd != new_fd:
            copy_entries(old_fd, new_fd)
        report["reused"].append(name)
    report["obsolete"] = sorted(set(old_maps) - set(new_maps))
    return report
