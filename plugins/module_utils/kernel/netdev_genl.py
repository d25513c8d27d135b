# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kernel's own XDP feature flags: the `netdev` generic netlink family (Linux 6.3+).

NETDEV_CMD_DEV_GET answers, per interface of the caller's network namespace,
the `xdp-features` bit set the driver declares (what `ynl --spec netdev.yaml
--dump dev-get` prints) and `xdp-zc-max-segs`. Kernels before 6.3 have no
such family: callers get None and fall back to their driver knowledge.
"""

from __future__ import annotations

try:
    from pyroute2.netlink import NLM_F_REQUEST, genlmsg
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.generic import GenericNetlinkSocket

    HAS_PYROUTE2 = True
except ImportError:  # pragma: no cover - reported by the module through missing_required_lib
    HAS_PYROUTE2 = False
    GenericNetlinkSocket = object
    NetlinkError = OSError
    genlmsg = object
    NLM_F_REQUEST = 0

FAMILY = "netdev"
NETDEV_CMD_DEV_GET = 1

# enum netdev_xdp_act (include/uapi/linux/netdev.h), in bit order
XDP_FEATURE_BITS = (
    ("basic", 1 << 0),  # XDP_PASS/DROP/ABORTED/TX in the driver: native XDP
    ("redirect", 1 << 1),  # XDP_REDIRECT from this device
    ("ndo_xmit", 1 << 2),  # can be the target of XDP_REDIRECT (ndo_xdp_xmit)
    ("xsk_zerocopy", 1 << 3),  # AF_XDP zero-copy
    ("hw_offload", 1 << 4),  # programs run on the NIC
    ("rx_sg", 1 << 5),  # multi-buffer (jumbo frames) on receive
    ("ndo_xmit_sg", 1 << 6),  # multi-buffer frames as redirect target
)


class NetdevMsg(genlmsg):
    """A netdev family message: the `dev` attribute set."""

    nla_map = (
        ("NETDEV_A_DEV_UNSPEC", "none"),
        ("NETDEV_A_DEV_IFINDEX", "uint32"),
        ("NETDEV_A_DEV_PAD", "none"),
        ("NETDEV_A_DEV_XDP_FEATURES", "uint64"),
        ("NETDEV_A_DEV_XDP_ZC_MAX_SEGS", "uint32"),
        ("NETDEV_A_DEV_XDP_RX_METADATA_FEATURES", "uint64"),
        ("NETDEV_A_DEV_XSK_FEATURES", "uint64"),
    )


def decode_xdp_features(value: int) -> list:
    """The xdp-features bit set as names, in bit order; unknown bits as 'bit<N>'."""
    names = [name for name, bit in XDP_FEATURE_BITS if value & bit]
    known = 0
    for _name, bit in XDP_FEATURE_BITS:
        known |= bit
    extra = value & ~known
    pos = 0
    while extra:
        if extra & 1:
            names.append("bit%d" % pos)
        extra >>= 1
        pos += 1
    return names


class NetdevSocket(GenericNetlinkSocket):
    """A generic netlink socket bound to the netdev family."""

    def bind_family(self) -> None:
        self.bind(FAMILY, NetdevMsg)

    def dev_get(self, ifindex: int):
        """NETDEV_CMD_DEV_GET for one interface (a `do` request, not a dump: the kernel sends dump
        replies of this family without NLM_F_MULTI, and pyroute2 0.7 then stops after the first)."""
        msg = NetdevMsg()
        msg["cmd"] = NETDEV_CMD_DEV_GET
        msg["version"] = 1
        msg["attrs"] = [("NETDEV_A_DEV_IFINDEX", ifindex)]
        replies = list(self.nlm_request(msg, msg_type=self.prid, msg_flags=NLM_F_REQUEST))
        return replies[0] if replies else None


def parse_dev(msg) -> dict:
    value = msg.get_attr("NETDEV_A_DEV_XDP_FEATURES") or 0
    return {
        "xdp_features": value,
        "flags": decode_xdp_features(value),
        "xdp_zc_max_segs": msg.get_attr("NETDEV_A_DEV_XDP_ZC_MAX_SEGS") or 0,
    }


def xdp_features(ifindexes) -> dict:
    """{ifindex: {'xdp_features': int, 'flags': [names], 'xdp_zc_max_segs': int}} or None.

    None means the kernel has no netdev generic netlink family (before 6.3) or
    pyroute2 is missing. An interface the family does not answer for is left out.
    """
    if not HAS_PYROUTE2:
        return None
    sock = NetdevSocket()
    try:
        try:
            sock.bind_family()
        except NetlinkError:
            return None
        result = {}
        for ifindex in ifindexes:
            try:
                msg = sock.dev_get(ifindex)
            except NetlinkError:
                continue
            if msg is not None:
                result[ifindex] = parse_dev(msg)
        return result
    finally:
        sock.close()
