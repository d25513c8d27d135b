# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Put the first program of a chain on a hook, swap it atomically, take it off.

Three ways, one interface:
  * ``xdp``:    an XDP bpf_link (native, generic or offload flags);
  * ``tcx``:    a TCX bpf_link (ingress or egress), where the kernel has TCX;
  * ``clsact``: a direct-action bpf filter under the clsact qdisc (pyroute2),
                for kernels without TCX. The qdisc is created only when absent
                and removed only when this collection created it and no filter
                is left; only the collection's own filter (fixed priority and
                handle, name ``fleet``) is ever touched.

A link swap is ``BPF_LINK_UPDATE`` naming the expected old program, so a
concurrent change fails instead of being overwritten. A filter swap is a
``tc filter replace`` of the same (priority, handle): cls_bpf switches the
program under RCU, so every packet sees one of the two.
"""

from __future__ import annotations

import errno
import glob
import os

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf, netlink

XDP_MODE_FLAGS = {
    "native": libbpf.XDP_FLAGS_DRV_MODE,
    "generic": libbpf.XDP_FLAGS_SKB_MODE,
    "offload": libbpf.XDP_FLAGS_HW_MODE,
}
TCX_ATTACH = {"tc_ingress": libbpf.ATTACH_TCX_INGRESS, "tc_egress": libbpf.ATTACH_TCX_EGRESS}
CLSACT_PARENT = {"tc_ingress": 0xFFFFFFF2, "tc_egress": 0xFFFFFFF3}
CLSACT_PRIO = 0xF1EE
CLSACT_HANDLE = 1
CLSACT_NAME = "fleet"
LIBXDP_PIN_GLOB = "/sys/fs/bpf/xdp/dispatch-%d-*"


class AttachError(FleetError, RuntimeError):
    pass


class NoNativeXdp(AttachError):
    """The driver has no native XDP (EOPNOTSUPP on a native attach)."""


def tcx_supported(ifindex: int) -> bool:
    """Probe: the kernel answers a TCX query (kernels without TCX reject the attach type)."""
    try:
        libbpf.prog_query(ifindex, libbpf.ATTACH_TCX_INGRESS)
    except libbpf.BpfError:
        return False
    return True


def ext_supported() -> bool:
    try:
        return libbpf.probe_prog_type(libbpf.PROG_TYPE_EXT)
    except libbpf.LibbpfMissing:
        return False


def libxdp_dispatcher(ifindex: int) -> bool:
    """True when libxdp's multi-program dispatcher holds this interface (its pins exist)."""
    return bool(glob.glob(LIBXDP_PIN_GLOB % ifindex))


def link_prog_id(link_pin: str) -> int:
    """The program id behind a pinned link, 0 when the pin is gone or the link is detached."""
    try:
        fd = libbpf.obj_get(link_pin)
    except libbpf.BpfError:
        return 0
    with libbpf.fd_closing(fd):
        info = libbpf.link_info(fd)
    return info.get("prog_id", 0) if info.get("ifindex", 1) else 0


# ---------------------------------------------------------------- links (xdp, tcx)


def link_attach(hook: str, ifindex: int, prog_fd: int, mode: str = "") -> int:
    """A new link for prog_fd on the hook; returns the link fd."""
    if hook == "xdp":
        try:
            return libbpf.link_create(prog_fd, ifindex, libbpf.ATTACH_XDP, XDP_MODE_FLAGS[mode])
        except libbpf.BpfError as exc:
            if mode == "native" and exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP, 524):
                raise NoNativeXdp(str(exc))
            raise
    return libbpf.link_create(prog_fd, ifindex, TCX_ATTACH[hook], 0)


def link_swap(link_pin: str, new_prog_fd: int, old_prog_id: int) -> None:
    """Atomically replace the link's program, only if old_prog_id is still the one attached."""
    link_fd = libbpf.obj_get(link_pin)
    with libbpf.fd_closing(link_fd):
        old_fd = libbpf.prog_fd_by_id(old_prog_id) if old_prog_id else -1
        with libbpf.fd_closing(old_fd if old_fd >= 0 else None):
            libbpf.link_update(link_fd, new_prog_fd, old_fd)


def link_remove(link_pin: str) -> None:
    try:
        link_fd = libbpf.obj_get(link_pin)
    except libbpf.BpfError:
        return
    with libbpf.fd_closing(link_fd):
        try:
            libbpf.link_detach(link_fd)
        except libbpf.BpfError as exc:
            if exc.errno not in (errno.ENOLINK, errno.EINVAL):
                raise
    try:
        os.unlink(link_pin)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------- clsact


def _ipr():
    netlink.require_pyroute2()
    return netlink.IPRoute()


def clsact_present(ifindex: int) -> bool:
    with _ipr() as ipr:
        for msg in ipr.get_qdiscs(index=ifindex):
            if msg.get_attr("TCA_KIND") == "clsact":
                return True
    return False


def clsact_filters(ifindex: int, hook: str) -> list:
    """[(prio, handle, name, prog id)] of the bpf filters on one clsact direction."""
    out = []
    with _ipr() as ipr:
        try:
            msgs = ipr.get_filters(index=ifindex, parent=CLSACT_PARENT[hook])
        except Exception:  # pylint: disable=broad-except
            return out
        for msg in msgs:
            if msg.get_attr("TCA_KIND") != "bpf":
                continue
            opts = msg.get_attr("TCA_OPTIONS")
            if opts is None:
                continue
            prog_id = 0
            for name, value in getattr(opts, "attrs", []):
                if name in ("TCA_BPF_ID", 11):
                    prog_id = value
            if not prog_id:
                prog_id = _raw_bpf_id(opts)
            out.append((msg["info"] >> 16, msg["handle"], opts.get_attr("TCA_BPF_NAME"), prog_id))
    return out


def _raw_bpf_id(opts) -> int:
    """pyroute2 0.7 does not decode TCA_BPF_ID (attribute 11): read it from the raw attribute bytes."""
    data = getattr(opts, "data", None)
    if not data:
        return 0
    pos = opts.offset + 4
    end = opts.offset + opts.length
    while pos + 4 <= end:
        length = int.from_bytes(data[pos : pos + 2], "little")
        kind = int.from_bytes(data[pos + 2 : pos + 4], "little") & 0x3FFF
        if length < 4:
            break
        if kind == 11 and length >= 8:
            return int.from_bytes(data[pos + 4 : pos + 8], "little")
        pos += (length + 3) & ~3
    return 0


def clsact_prog_id(ifindex: int, hook: str) -> int:
    for prio, _handle, name, prog_id in clsact_filters(ifindex, hook):
        if prio == CLSACT_PRIO and (name or "").startswith(CLSACT_NAME):
            return prog_id
    return 0


def clsact_attach(ifindex: int, hook: str, prog_fd: int, replace: bool) -> bool:
    """Add (or replace) the collection's filter; returns True when this call created the clsact qdisc."""
    created = False
    with _ipr() as ipr:
        if not replace and not clsact_present(ifindex):
            ipr.tc("add", "clsact", ifindex)
            created = True
        ipr.tc(
            "replace-filter" if replace else "add-filter",
            "bpf",
            ifindex,
            CLSACT_HANDLE,
            fd=prog_fd,
            name=CLSACT_NAME,
            parent=CLSACT_PARENT[hook],
            prio=CLSACT_PRIO,
            direct_action=True,
        )
    return created


def clsact_remove(ifindex: int, hook: str, qdisc_created: bool) -> None:
    with _ipr() as ipr:
        if clsact_prog_id(ifindex, hook):
            ipr.tc("del-filter", "bpf", ifindex, CLSACT_HANDLE, parent=CLSACT_PARENT[hook], prio=CLSACT_PRIO)
        if qdisc_created and clsact_present(ifindex):
            others = [f for d in CLSACT_PARENT for f in clsact_filters(ifindex, d)]
            if not others:
                ipr.tc("del", "clsact", ifindex)
