# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rules for names and paths an operator gives any module, checked before anything changes.

Every module (xdp_program, tc_program, bpf_map, bpf_info, xdp_support) runs its names and paths through
``check_params`` first: a deployment, map or interface name, a pin root or a state directory that is hostile
(shell metacharacters, ``..``, ``/``, too long, a dot bpffs refuses, a path outside bpffs) fails with an
InputError naming the field, the value and what was expected, before the kernel or a file changes.

Names of deployments and maps become pin folders: their rule is bpffs.check_name (letters, digits, '_' and
'-', at most 64, no dot since bpffs refuses dots). Interface names follow the kernel's rule (1 to 15
characters, IFNAMSIZ) restricted to letters, digits, '_', '-' and '.'; an interface a program is attached to
also names a pin folder (``<hook>@<interface>``), so there a dot is refused too.
"""

from __future__ import annotations

import os
import re

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import InputError, short_repr
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs

IFNAMSIZ = 16  # the kernel's limit, with the terminating NUL
IFNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,%d}$" % (IFNAMSIZ - 1))
PIN_COMPONENT = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
PATH_MAX_CHARS = 1024  # far below PATH_MAX (4096): room for the deployment, hook and map below
NAME_MAX = 255
NOT_FOR_STATE = ("/proc", "/sys", "/dev")
IFNAME_EXPECTED = "an interface name of 1 to %d characters: letters, digits, '_', '-' or '.' (not '.' or '..')" % (IFNAMSIZ - 1)


def bad(field: str, value, expected: str, why: str = "is not valid") -> InputError:
    """The InputError '<field>=<value> <why>: expected <expected>'."""
    return InputError("%s=%s %s: expected %s" % (field, short_repr(value), why, expected), field=field, value=value, expected=expected)


def check_name(field: str, value) -> str:
    """A deployment or map name (it becomes a pin folder): bpffs.check_name's rule."""
    return bpffs.check_name(field, value)


def check_ifname(field: str, value, pinned: bool = True) -> str:
    """An interface name; pinned=True when it becomes part of a pin folder name (no dot then)."""
    if not isinstance(value, str) or not IFNAME_PATTERN.match(value) or value in (".", ".."):
        why = "is not an interface name"
        if isinstance(value, str) and len(value) >= IFNAMSIZ:
            why += " (%d characters, longer than IFNAMSIZ allows)" % len(value)
        raise InputError("%s: %s %s: expected %s" % (field, short_repr(value), why, IFNAME_EXPECTED), field=field, value=value, expected=IFNAME_EXPECTED)
    if pinned and "." in value:
        expected = (
            "an interface without a dot in its name: its pins are named <hook>@<interface> and bpffs "
            "refuses dots (a VLAN such as eth0.100 can be renamed with `ip link set NAME name eth0v100`)"
        )
        raise InputError("%s: %r cannot carry a program: expected %s" % (field, value, expected), field=field, value=value, expected=expected)
    return value


def _check_path_text(field: str, value) -> list:
    """An absolute, normalised path without control characters; returns its components."""
    if not isinstance(value, str) or not value:
        raise bad(field, value, "an absolute path")
    if len(value) > PATH_MAX_CHARS:
        raise bad(field, value, "a path of at most %d characters (got %d)" % (PATH_MAX_CHARS, len(value)), "is too long")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise bad(field, value, "a path without control characters (newlines, tabs)")
    if not value.startswith("/"):
        raise bad(field, value, "an absolute path (starting with /)", "is relative")
    parts = [part for part in value.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise bad(
            field, value, "a path without '.' or '..' components (they resolve to another folder): %s" % os.path.normpath(value), "resolves to another folder"
        )
    if any(len(part) > NAME_MAX for part in parts):
        raise bad(field, value, "path components of at most %d characters" % NAME_MAX, "is too long")
    return parts


def _longest_mount(path: str):
    best, best_type = "", ""
    for point, fstype in bpffs.mounts():
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, best_type = point, fstype
    return best, best_type


def check_pin_root(value, field: str = "pin_root") -> str:
    """A folder on a mounted bpf filesystem (or below /sys/fs/bpf, which the modules mount when missing)."""
    _check_path_text(field, value)
    path = os.path.realpath(value)
    point, fstype = _longest_mount(path)
    on_bpffs = fstype == "bpf"
    default_point = bpffs.BPFFS_DEFAULT
    if not on_bpffs and not (path + "/").startswith(default_point + "/"):
        points = bpffs.bpffs_mount_points()
        raise bad(
            field,
            value,
            "a folder on a mounted bpf filesystem such as %s (bpf mounts here: %s)"
            % (bpffs.PIN_ROOT_DEFAULT, ", ".join(points) or "none; %s is mounted when missing" % default_point),
            "is not on a bpf filesystem",
        )
    base = point if on_bpffs else default_point
    below = [part for part in path[len(base) :].split("/") if part]
    if not below:
        raise bad(
            field,
            value,
            "a folder below the bpffs mount point %s, such as %s, so that the collection's "
            "folders do not mix with other tools' pins" % (base, bpffs.PIN_ROOT_DEFAULT),
            "is a bpffs mount point itself",
        )
    for part in below:
        if not PIN_COMPONENT.match(part):
            raise bad(field, value, "folder names of letters, digits, '_' or '-' below %s (bpffs refuses dots)" % base, "has a folder name bpffs refuses")
    if os.path.lexists(value) and not os.path.isdir(value):
        raise bad(field, value, "a folder (or nothing yet), not a file", "is a file")
    return value


def check_pin_path(value, field: str = "path") -> str:
    """A pin given by its full path (bpf_map's path): an absolute path on a bpf filesystem."""
    _check_path_text(field, value)
    _point, fstype = _longest_mount(os.path.realpath(value))
    if fstype != "bpf":
        raise bad(field, value, "the path of a pin on a mounted bpf filesystem such as %s/NAME/maps/MAP" % bpffs.PIN_ROOT_DEFAULT, "is not on a bpf filesystem")
    return value


def check_state_dir(value, field: str = "state_dir") -> str:
    """A folder for records on a regular file system: not bpffs, /proc, /sys or /dev, not a file."""
    parts = _check_path_text(field, value)
    if not parts:
        raise bad(field, value, "a folder of its own such as /var/lib/ebpf_fleet, not /", "is the root folder")
    path = os.path.realpath(value)
    if any((path + "/").startswith(top + "/") for top in NOT_FOR_STATE):
        raise bad(
            field,
            value,
            "a folder on a regular file system such as /var/lib/ebpf_fleet (not under %s)" % ", ".join(NOT_FOR_STATE),
            "is on a kernel file system",
        )
    _point, fstype = _longest_mount(path)
    if fstype == "bpf":
        raise bad(field, value, "a folder on a regular file system such as /var/lib/ebpf_fleet (bpffs holds only pins, not records)", "is on a bpf filesystem")
    probe = value
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise bad(field, value, "a folder (or a path to create one), but %s is a file" % probe, "is not a folder")
    return value


def check_params(params: dict, pinned_interfaces: bool = False) -> None:
    """Check every name and path option a module has (absent options and None values are skipped)."""
    for field in ("name", "map"):
        if params.get(field) is not None:
            check_name(field, params[field])
    for ifname in params.get("interfaces") or []:
        check_ifname("interfaces", ifname, pinned=pinned_interfaces)
    if params.get("pin_root") is not None:
        check_pin_root(params["pin_root"])
    if params.get("path") is not None:
        check_pin_path(params["path"])
    if params.get("state_dir") is not None:
        check_state_dir(params["state_dir"])
