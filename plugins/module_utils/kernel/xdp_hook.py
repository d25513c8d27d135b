# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""XDP attach, detach and query through libbpf's netlink helpers (bpf_xdp_attach/detach/query).

pyroute2 0.7.12 drops `xdp_flags` from `IPRoute.link('set', ...)` (only
IFLA_XDP_FD is sent, so every attach becomes the kernel's default mode) and
encodes IFLA_XDP_FLAGS as a big-endian u16; libbpf sends the flags the kernel
expects. Everything acts in the caller's network namespace.
"""

from __future__ import annotations

import ctypes

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf

MODES = {0: None, 1: "native", 2: "generic", 3: "offload", 4: "multi"}


class XdpAttachOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("old_prog_fd", ctypes.c_int)]


class XdpQueryOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_id", ctypes.c_uint32),
        ("drv_prog_id", ctypes.c_uint32),
        ("hw_prog_id", ctypes.c_uint32),
        ("skb_prog_id", ctypes.c_uint32),
        ("attach_mode", ctypes.c_uint8),
    ]


_DECLARED = False


def _lib():
    global _DECLARED
    handle = libbpf.lib()
    if not _DECLARED:
        handle.bpf_xdp_attach.restype = ctypes.c_int
        handle.bpf_xdp_attach.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p]
        handle.bpf_xdp_detach.restype = ctypes.c_int
        handle.bpf_xdp_detach.argtypes = [ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p]
        handle.bpf_xdp_query.restype = ctypes.c_int
        handle.bpf_xdp_query.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        _DECLARED = True
    return handle


def _check(ret: int, op: str, detail: str) -> None:
    if ret < 0:
        raise libbpf.BpfError(op, -ret, detail)


def attach(ifindex: int, prog_fd: int, flags: int, old_prog_fd: int = -1) -> None:
    """Attach prog_fd at ifindex with XDP_FLAGS_* (mode, UPDATE_IF_NOEXIST, REPLACE with old_prog_fd)."""
    opts = XdpAttachOpts(sz=ctypes.sizeof(XdpAttachOpts), old_prog_fd=old_prog_fd)
    if old_prog_fd >= 0:
        flags |= libbpf.XDP_FLAGS_REPLACE
    _check(_lib().bpf_xdp_attach(ifindex, prog_fd, flags, ctypes.byref(opts)), "bpf_xdp_attach", "ifindex %d, flags %#x" % (ifindex, flags))


def detach(ifindex: int, flags: int) -> None:
    """Detach whatever program is attached at ifindex in the mode given by flags."""
    _check(_lib().bpf_xdp_detach(ifindex, flags, None), "bpf_xdp_detach", "ifindex %d, flags %#x" % (ifindex, flags))


def query(ifindex: int) -> dict:
    """{'mode': native|generic|offload|multi|None, 'prog_id', 'native_id', 'generic_id', 'offload_id'}."""
    opts = XdpQueryOpts(sz=ctypes.sizeof(XdpQueryOpts))
    _check(_lib().bpf_xdp_query(ifindex, 0, ctypes.byref(opts)), "bpf_xdp_query", "ifindex %d" % ifindex)
    return {
        "mode": MODES.get(opts.attach_mode, "unknown"),
        "prog_id": opts.prog_id,
        "native_id": opts.drv_prog_id,
        "generic_id": opts.skb_prog_id,
        "offload_id": opts.hw_prog_id,
    }
