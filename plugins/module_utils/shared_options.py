# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options every module of the action group ebpf.fleet.ebpf accepts (doc fragment ebpf.fleet.paths)."""

from __future__ import annotations

PIN_ROOT_DEFAULT = "/sys/fs/bpf/ebpf_fleet"
STATE_DIR_DEFAULT = "/var/lib/ebpf_fleet"


def argument_spec() -> dict:
    """pin_root and state_dir, so that module_defaults for group/ebpf.fleet.ebpf fits every module."""
    return dict(
        pin_root=dict(type="path", default=PIN_ROOT_DEFAULT),
        state_dir=dict(type="path", default=STATE_DIR_DEFAULT),
    )
