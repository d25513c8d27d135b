# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """The options every module of the action group ebpf.fleet.ebpf accepts (set them once with module_defaults)."""

    DOCUMENTATION = r"""
options:
  pin_root:
    description:
      - Folder on bpffs for the collection's pins (mounted at /sys/fs/bpf when missing, by a run that pins).
      - An absolute path on a mounted bpf filesystem or below C(/sys/fs/bpf), below the mount point itself, without
        V(..) components or dots in folder names; anything else (C(/tmp), C(/etc)) fails before anything changes.
      - Every module of the action group C(group/ebpf.fleet.ebpf) accepts it, so that C(module_defaults) can set it
        once for all of them; modules that pin nothing (M(ebpf.fleet.xdp_support)) ignore it.
    type: path
    default: /sys/fs/bpf/ebpf_fleet
  state_dir:
    description:
      - Folder for the deployment records (object copy, checksum, options) from which a host can restore itself.
      - An absolute path on a regular file system (not bpffs, C(/proc), C(/sys) or C(/dev)), without V(..)
        components.
      - Every module of the action group C(group/ebpf.fleet.ebpf) accepts it, so that C(module_defaults) can set it
        once for all of them; M(ebpf.fleet.bpf_map) records there the contents it declares (for the host's
        restore at boot) and, in check mode, types entries for maps not pinned yet through the recorded object;
        modules that keep no records ignore it.
    type: path
    default: /var/lib/ebpf_fleet
"""
