# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bpffs: find or mount it, and lay out the collection's pins under a pin root.

Layout under a pin root (default /sys/fs/bpf/ebpf_fleet), one folder per
deployment so that a deployment is removed by removing its folder:

    <pin_root>/<deployment>/maps/<map>        data maps, kept across upgrades
    <pin_root>/<deployment>/progs/<hook>@<if>  program instance on one hook
    <pin_root>/_hooks/<hook>@<if>/...         the hook's link and chain, shared
                                              by the deployments on that hook

bpffs refuses names that contain a dot, so no pin or folder name has one.
Pins are created mode 0600, folders 0700, owned by the user running the
module (root).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import shutil

from ansible_collections.ebpf.fleet.plugins.module_utils import shared_options
from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError, InputError, converting, short_repr

BPFFS_DEFAULT = "/sys/fs/bpf"
PIN_ROOT_DEFAULT = shared_options.PIN_ROOT_DEFAULT
# bpffs refuses names with a dot (reserved by the kernel), so names never carry one.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class BpffsError(FleetError, RuntimeError):
    pass


def mounts() -> list:
    """(mount point, fs type) for every mount this process sees."""
    result = []
    try:
        with open("/proc/self/mounts") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 3:
                    result.append((fields[1].replace("\\040", " "), fields[2]))
    except OSError:
        pass
    return result


def bpffs_mount_points() -> list:
    return [point for point, fstype in mounts() if fstype == "bpf"]


def is_on_bpffs(path: str) -> bool:
    """True when path lies on a bpf filesystem (the longest matching mount wins)."""
    path = os.path.abspath(path)
    best, best_type = "", ""
    for point, fstype in mounts():
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, best_type = point, fstype
    return best_type == "bpf"


def ensure_mounted(mount_point: str = BPFFS_DEFAULT) -> bool:
    """Mount bpffs at mount_point unless it is there; True when this call mounted it."""
    if mount_point in bpffs_mount_points():
        return False
    with converting("creating the bpffs mount point %s" % mount_point):
        os.makedirs(mount_point, exist_ok=True)
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    ret = libc.mount(b"bpf", mount_point.encode(), b"bpf", 0, None)
    if ret != 0:
        err = ctypes.get_errno()
        raise BpffsError(
            "cannot mount bpffs at %s: %s; mount it yourself (mount -t bpf bpf %s) or run the task as root" % (mount_point, os.strerror(err), mount_point)
        )
    return True


def _under_default(pin_root: str) -> bool:
    path = os.path.abspath(pin_root)
    return path == BPFFS_DEFAULT or path.startswith(BPFFS_DEFAULT + "/")


def _not_on_bpffs(pin_root: str) -> BpffsError:
    return BpffsError("pin_root %r is not on a bpf filesystem; expected a path under a bpffs mount such as %s" % (pin_root, BPFFS_DEFAULT))


def ensure_pin_root(pin_root: str = PIN_ROOT_DEFAULT) -> None:
    """Make sure pin_root exists on a bpffs, mounting /sys/fs/bpf when needed."""
    if not is_on_bpffs(pin_root):
        if _under_default(pin_root):
            ensure_mounted(BPFFS_DEFAULT)
        if not is_on_bpffs(pin_root):
            raise _not_on_bpffs(pin_root)
    makedirs(pin_root)


def makedirs(path: str) -> None:
    """Create path and every missing parent with mode 0700 (os.makedirs gives the parents 0777 & ~umask)."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        makedirs(parent)
    with converting("creating the folder %s" % path):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            return
        os.chmod(path, 0o700)  # whatever the umask


def check_name(field: str, value: str) -> str:
    """Names become pin folders: letters, digits, '_', '-', at most 64 (bpffs allows no dots)."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        expected = "1 to 64 characters of letters, digits, '_' or '-' (no dots: bpffs refuses them), starting with a letter or digit"
        raise InputError("%s=%s is not a valid name: expected %s" % (field, short_repr(value), expected), field=field, value=value, expected=expected)
    return value


def pin(fd: int, path: str) -> None:
    """Pin fd at path (mode 0600), replacing an existing pin atomically by rename."""
    from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf  # pylint: disable=import-outside-toplevel

    makedirs(os.path.dirname(path))
    tmp = "%s_tmp%d" % (path, os.getpid())
    unpin(tmp)
    with converting("pinning %s" % path):
        libbpf.obj_pin(fd, tmp)
        try:
            os.chmod(tmp, 0o600)
            os.rename(tmp, path)
        except OSError:
            unpin(tmp)
            raise


def unpin(path: str) -> bool:
    """Remove a pin; False when there was none."""
    with converting("removing the pin %s" % path):
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
    return True


def remove_tree(path: str) -> None:
    """Remove a folder of pins (bpffs allows unlink and rmdir, as any filesystem)."""
    if os.path.isdir(path):
        with converting("removing the folder of pins %s" % path):
            shutil.rmtree(path)


def deployment_dir(pin_root: str, name: str) -> str:
    return os.path.join(pin_root, check_name("name", name))


def map_pin(pin_root: str, name: str, map_name: str) -> str:
    return os.path.join(deployment_dir(pin_root, name), "maps", map_name)


def hook_id(hook: str, ifname: str) -> str:
    """'xdp@eth0', 'tc_ingress@eth0', 'tc_egress@eth0'."""
    return "%s@%s" % (hook, ifname)


def prog_pin(pin_root: str, name: str, hook: str, ifname: str) -> str:
    return os.path.join(deployment_dir(pin_root, name), "progs", hook_id(hook, ifname))


def hook_dir(pin_root: str, hook: str, ifname: str) -> str:
    return os.path.join(pin_root, "_hooks", hook_id(hook, ifname))
