# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Links and their XDP state through rtnetlink (pyroute2; XDP state through libbpf, see xdp_hook).

Works in the network namespace of the calling process, so a module run with
`nsenter --net=...` (a lab host) sees that namespace's links. Reads netlink
only, never sysfs (sysfs shows the namespace that mounted it).
"""

from __future__ import annotations

import socket

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf, xdp_hook

try:
    from pyroute2 import IPRoute

    HAS_PYROUTE2 = True
    PYROUTE2_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by modules through missing_required_lib
    IPRoute = None
    HAS_PYROUTE2 = False
    PYROUTE2_IMPORT_ERROR = exc

PYROUTE2_PACKAGE = "pyroute2 (Debian: python3-pyroute2)"


class LinkNotFound(FleetError, LookupError):
    """An interface that does not exist in this network namespace."""

    def __init__(self, ifname: str, known=()):
        self.ifname = ifname
        known = sorted(known)
        msg = "interface %r does not exist in this network namespace" % ifname
        if known:
            msg += "; interfaces here: %s" % ", ".join(known)
        super().__init__(msg)


def _attr(msg, name, default=None):
    value = msg.get_attr(name)
    return default if value is None else value


def _xdp_state(ifindex: int) -> dict:
    """The XDP program attached now, through libbpf's query (pyroute2 0.7 mis-decodes IFLA_XDP)."""
    try:
        return xdp_hook.query(ifindex)
    except (libbpf.BpfError, libbpf.LibbpfMissing) as exc:
        return {"mode": "unknown", "prog_id": 0, "native_id": 0, "generic_id": 0, "offload_id": 0, "error": str(exc)}


def _link_record(msg) -> dict:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo is not None else None
    return {
        "ifname": msg.get_attr("IFLA_IFNAME"),
        "ifindex": msg["index"],
        "kind": kind,
        "mtu": _attr(msg, "IFLA_MTU", 0),
        "max_mtu": _attr(msg, "IFLA_MAX_MTU", 0),
        "min_mtu": _attr(msg, "IFLA_MIN_MTU", 0),
        "address": msg.get_attr("IFLA_ADDRESS"),
        "operstate": msg.get_attr("IFLA_OPERSTATE"),
        "up": bool(msg["flags"] & 1),
        "loopback": bool(msg["flags"] & 8),
        "num_tx_queues": _attr(msg, "IFLA_NUM_TX_QUEUES", 0),
        "num_rx_queues": _attr(msg, "IFLA_NUM_RX_QUEUES", 0),
        "link_ifindex": _attr(msg, "IFLA_LINK", 0),
        "master_ifindex": _attr(msg, "IFLA_MASTER", 0),
        "xdp": _xdp_state(msg["index"]),
    }


def require_pyroute2() -> None:
    if not HAS_PYROUTE2:
        raise ImportError("the Python library %s is required: %s" % (PYROUTE2_PACKAGE, PYROUTE2_IMPORT_ERROR))


def links() -> list:
    """Every link of this network namespace, as dicts (see _link_record)."""
    require_pyroute2()
    with IPRoute() as ipr:
        return [_link_record(msg) for msg in ipr.get_links()]


def link(ifname: str) -> dict:
    """One link by name; raises LinkNotFound naming the interfaces that do exist."""
    require_pyroute2()
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise LinkNotFound(ifname, [_attr(m, "IFLA_IFNAME", "?") for m in ipr.get_links()])
        return _link_record(ipr.get_links(found[0])[0])


def ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise LinkNotFound(ifname, [pair[1] for pair in socket.if_nameindex()])


def xdp_state(ifname: str) -> dict:
    return link(ifname)["xdp"]
