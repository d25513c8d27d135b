# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What is known about XDP per network driver, and the rules that turn facts into answers.

The kernel's own `xdp-features` flags (netdev generic netlink, Linux 6.3+)
always win. The table below is the fallback for older kernels: the mainline
release in which each driver gained native XDP, whether it can offload, its
quirks, and the largest MTU a single-buffer program accepts (4 KiB pages)
where the driver's limit is known. Versions are mainline releases; vendor
kernels (RHEL, Ubuntu HWE) often backport drivers, so an older release with a
backport shows as 'no' here while it works: the probe option settles it.

A missing answer is 'unknown', never 'no'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import probes

YES, NO, UNKNOWN = probes.YES, probes.NO, probes.UNKNOWN

REDIRECT_TARGET_NEEDS_XDP = (
    "as an XDP_REDIRECT target the device needs an XDP program attached to it (or to its peer for veth) before redirected frames are accepted"
)


@dataclass(frozen=True)
class DriverInfo:
    """What the table knows about one driver (the name `ethtool -i` shows)."""

    name: str
    description: str
    native_since: str = ""  # mainline release that added native XDP; '' = never / not applicable
    native: str = YES  # YES (from native_since), NO (never), UNKNOWN (depends on configuration)
    offload_since: str = ""  # hardware offload (only nfp)
    rx_sg_since: str = ""  # multi-buffer receive (xdp.frags)
    max_native_mtu: int = 0  # single-buffer program, 4 KiB pages; 0 = not known
    quirks: tuple = field(default_factory=tuple)


_TABLE = (
    DriverInfo(
        "virtio_net",
        "virtio network device (KVM/QEMU guests)",
        "4.10",
        rx_sg_since="6.3",
        max_native_mtu=3506,
        quirks=(
            "native XDP needs enough queue pairs (one XDP TX queue per CPU): raise them with "
            "`ethtool -L <if> combined N` or the VM's queues= option, else the attach may fail or "
            "XDP_TX / XDP_REDIRECT falls back to a shared, locked queue",
            "guest offloads (LRO/GRO_HW) must be off for native XDP; the driver turns them off or refuses",
        ),
    ),
    DriverInfo(
        "veth",
        "virtual Ethernet pair",
        "4.19",
        rx_sg_since="5.18",
        max_native_mtu=3506,
        quirks=(REDIRECT_TARGET_NEEDS_XDP, "native XDP runs on the receiving side: attach to the veth that receives the traffic"),
    ),
    DriverInfo("tun", "TUN/TAP device", "4.14", quirks=("native XDP only in TAP mode (ethtool bus-info 'tap'); TUN (layer 3) devices have generic XDP only",)),
    DriverInfo("ixgbe", "Intel 82599/X540/X550 10 GbE", "4.12", max_native_mtu=3046, quirks=("AF_XDP zero-copy since 4.20",)),
    DriverInfo("ixgbevf", "Intel 82599/X540/X550 virtual function", "4.17", max_native_mtu=3046),
    DriverInfo("i40e", "Intel XL710/X710 40/10 GbE", "4.13", rx_sg_since="6.3", max_native_mtu=3046, quirks=("AF_XDP zero-copy since 4.18",)),
    DriverInfo("ice", "Intel E800 series 100 GbE", "5.5", rx_sg_since="6.3", max_native_mtu=3046),
    DriverInfo("igb", "Intel 82575/82576/I350/I210 1 GbE", "5.10", max_native_mtu=3046),
    DriverInfo("igc", "Intel I225/I226 2.5 GbE", "5.13"),
    DriverInfo("mlx4_en", "Mellanox ConnectX-3", "4.8", max_native_mtu=3498),
    DriverInfo(
        "mlx5_core",
        "NVIDIA/Mellanox ConnectX-4 and later",
        "4.9",
        rx_sg_since="6.4",
        max_native_mtu=3498,
        quirks=("striding RQ is turned off while an XDP program is attached (legacy RQ)", "AF_XDP zero-copy since 5.3"),
    ),
    DriverInfo("bnxt_en", "Broadcom NetXtreme-C/E", "4.11", rx_sg_since="5.19", max_native_mtu=3500),
    DriverInfo(
        "nfp",
        "Netronome Agilio SmartNIC",
        "4.10",
        offload_since="4.10",
        quirks=(
            "hardware offload needs the BPF application firmware on the card; with the basic NIC firmware only native XDP is available",
            "offloaded programs support a subset of helpers and map types",
        ),
    ),
    DriverInfo(
        "ena",
        "Amazon Elastic Network Adapter (AWS)",
        "5.5",
        max_native_mtu=3498,
        quirks=("native XDP needs half of the queues free for XDP TX: attach fails when all queues are in use",),
    ),
    DriverInfo("qede", "Marvell/QLogic FastLinQ 45000", "4.10"),
    DriverInfo("nicvf", "Cavium ThunderX virtual function", "4.14"),
    DriverInfo("sfc", "AMD/Solarflare SFC9000/X2", "5.5"),
    DriverInfo("dpaa2-eth", "NXP DPAA2 Ethernet", "5.0"),
    DriverInfo("dpaa_eth", "NXP DPAA1 Ethernet", "5.11"),
    DriverInfo(
        "hv_netvsc",
        "Hyper-V synthetic NIC (Azure)",
        "5.6",
        quirks=(
            "with accelerated networking the traffic arrives on the VF (mlx5_core or mana): "
            "attach to the VF as well, or to netvsc which passes the program to the VF",
        ),
    ),
    DriverInfo("mana", "Microsoft Azure Network Adapter", "5.17"),
    DriverInfo("cpsw", "TI CPSW switch (AM335x, AM437x, DRA7)", "5.3"),
    DriverInfo("am65-cpsw-nuss", "TI AM65 CPSW", "6.9"),
    DriverInfo("xen-netfront", "Xen paravirtual NIC", "5.9", quirks=("the backend (netback) must advertise XDP headroom",)),
    DriverInfo("mvneta", "Marvell Armada 370/38x/XP", "5.5", rx_sg_since="5.18"),
    DriverInfo("mvpp2", "Marvell PPv2 (Armada 7k/8k)", "5.9"),
    DriverInfo("stmmac", "Synopsys DesignWare (STMicro) Ethernet", "5.13"),
    DriverInfo("fec", "NXP FEC (i.MX)", "6.2"),
    DriverInfo("enetc", "NXP ENETC (LS1028A)", "5.13"),
    DriverInfo("netsec", "Socionext NetSec", "5.0"),
    DriverInfo("rvu_nicpf", "Marvell OcteonTX2 PF", "5.16"),
    DriverInfo("lan743x", "Microchip LAN743x", "6.0"),
    DriverInfo("gve", "Google Virtual NIC (GCE)", "6.4"),
    DriverInfo(
        "bond",
        "bonding",
        native=UNKNOWN,
        native_since="5.15",
        quirks=("native XDP since 5.15 when every port's driver has native XDP and the mode is balance-rr, active-backup, balance-xor or 802.3ad",),
    ),
    DriverInfo("bridge", "Linux bridge", native=NO),
    DriverInfo("macvlan", "macvlan", native=NO, quirks=("attach to the parent device instead",)),
    DriverInfo("macvtap", "macvtap", native=NO),
    DriverInfo("ipvlan", "ipvlan", native=NO, quirks=("attach to the parent device instead",)),
    DriverInfo("802.1Q VLAN Support", "VLAN (8021q)", native=NO, quirks=("attach to the parent device and match the VLAN tag in the program",)),
    DriverInfo("vxlan", "VXLAN tunnel", native=NO),
    DriverInfo("geneve", "Geneve tunnel", native=NO),
    DriverInfo("dummy", "dummy", native=NO),
    DriverInfo("wireguard", "WireGuard", native=NO),
    DriverInfo("team", "team", native=NO),
    DriverInfo(
        "netkit",
        "netkit (BPF-programmable device pair)",
        native=NO,
        quirks=("netkit runs its own BPF programs (attach types netkit_primary/peer) instead of XDP",),
    ),
    DriverInfo("loopback", "loopback", native=NO),
)

DRIVERS = {item.name: item for item in _TABLE}
# rtnetlink link kinds that name the same thing when ethtool reports no driver
KIND_ALIASES = {
    "vlan": "802.1Q VLAN Support",
    "bond": "bond",
    "bridge": "bridge",
    "macvlan": "macvlan",
    "ipvlan": "ipvlan",
    "veth": "veth",
    "vxlan": "vxlan",
    "geneve": "geneve",
    "dummy": "dummy",
    "wireguard": "wireguard",
    "tun": "tun",
    "team": "team",
    "netkit": "netkit",
    "macvtap": "macvtap",
}
# ethtool names that differ from the table's
DRIVER_ALIASES = {
    "bonding": "bond",
    "8021q": "802.1Q VLAN Support",
    "thunder-nicvf": "nicvf",
    "sfc_ef100": "sfc",
    "netvsc": "hv_netvsc",
    "xen_netfront": "xen-netfront",
    "vif": "xen-netfront",
    "virtio-net": "virtio_net",
}


def lookup(driver: str, kind: str = ""):
    """The table's entry for a driver (or an rtnetlink kind when the driver is unknown), else None."""
    name = DRIVER_ALIASES.get(driver, driver)
    if name in DRIVERS:
        return DRIVERS[name]
    if kind:
        alias = KIND_ALIASES.get(kind, kind)
        return DRIVERS.get(alias)
    return None


def _ans(value: str, reason: str) -> dict:
    return {"supported": value, "reason": reason}


def decide_native(entry, driver: str, release: str, flags, bus_info: str = "") -> dict:
    """Native (driver) mode: kernel flags win, then the table; unknown when neither knows."""
    label = driver or "(no driver reported)"
    if flags is not None:
        if "basic" in flags:
            return _ans(YES, "the kernel reports xdp-features %s for this device" % ",".join(flags))
        return _ans(NO, "the kernel reports no xdp-features for this device (netdev netlink family, Linux 6.3+): driver %s has no native XDP" % label)
    if entry is None:
        return _ans(UNKNOWN, "driver %s is not in the driver table and this kernel does not report xdp-features (Linux 6.3+); try probe: true" % label)
    if entry.name == "tun":
        if bus_info == "tun":
            return _ans(NO, "tun device in TUN (layer 3) mode: native XDP exists only in TAP mode")
        if bus_info != "tap":
            return _ans(UNKNOWN, "tun driver, but TUN or TAP mode is unknown (bus-info %r)" % bus_info)
    if entry.native == NO:
        return _ans(NO, "%s (%s) has no native XDP (driver table)" % (entry.name, entry.description))
    if entry.native == UNKNOWN:
        return _ans(UNKNOWN, "%s: depends on configuration (driver table): %s" % (entry.name, "; ".join(entry.quirks) or "see the driver"))
    if not parse(release):
        return _ans(UNKNOWN, "kernel release %r cannot be compared with %s's native XDP release %s" % (release, entry.name, entry.native_since))
    if probes.version_at_least(release, entry.native_since):
        return _ans(YES, "%s has native XDP since Linux %s (driver table; kernel %s)" % (entry.name, entry.native_since, release))
    return _ans(
        NO,
        "%s gained native XDP in Linux %s; this kernel is %s (driver table; vendor backports "
        "are not known here: try probe: true)" % (entry.name, entry.native_since, release),
    )


def parse(release: str) -> tuple:
    return probes.parse_release(release)


def decide_generic(xdp_prog_type: dict) -> dict:
    """Generic (skb) mode works on every device once the kernel loads XDP programs."""
    value = xdp_prog_type.get("supported", UNKNOWN)
    if value == YES:
        return _ans(YES, "the kernel loads XDP programs; generic XDP works on any device")
    if value == NO:
        return _ans(NO, "the kernel cannot load XDP programs (%s)" % xdp_prog_type.get("reason", ""))
    return _ans(UNKNOWN, "whether the kernel loads XDP programs is unknown (%s)" % xdp_prog_type.get("reason", ""))


def decide_offload(entry, driver: str, release: str, flags) -> dict:
    label = driver or "(no driver reported)"
    if flags is not None:
        if "hw_offload" in flags:
            return _ans(YES, "the kernel reports xdp-feature hw_offload for this device")
        return _ans(NO, "the kernel reports no hw_offload xdp-feature for this device")
    if entry is None:
        return _ans(UNKNOWN, "driver %s is not in the driver table" % label)
    if not entry.offload_since:
        return _ans(NO, "%s has no XDP hardware offload (driver table: only nfp offloads)" % entry.name)
    if probes.version_at_least(release, entry.offload_since):
        return _ans(YES, "%s offloads XDP since Linux %s with the BPF firmware (driver table)" % (entry.name, entry.offload_since))
    return _ans(NO, "%s gained XDP offload in Linux %s; this kernel is %s" % (entry.name, entry.offload_since, release))


def max_native_mtu(entry, flags, native: dict):
    """(mtu or None, note): the largest MTU a single-buffer native program accepts, where known."""
    if native["supported"] == NO:
        return None, "no native XDP"
    note = ""
    if flags is not None and "rx_sg" in flags:
        note = "multi-buffer (rx_sg): programs declaring xdp.frags accept larger MTUs"
    if entry is None or not entry.max_native_mtu:
        return None, note or "not known for this driver"
    base = "for a single-buffer program with 4 KiB pages (driver table)"
    return entry.max_native_mtu, base + ("; " + note if note else "")


def recommend(native: dict, generic: dict) -> tuple:
    """(recommended_mode, verdict) for one interface.

    verdict: native (runs in the driver), generic (only the slower skb path),
    unsupported (no XDP at all) or unknown.
    """
    if native["supported"] == YES:
        return "native", "native"
    if generic["supported"] == YES:
        return "generic", "generic" if native["supported"] == NO else "unknown"
    if generic["supported"] == NO:
        return "none", "unsupported"
    return "none", "unknown"


def overall_verdict(verdicts: list) -> str:
    """native when every interface is native, then generic, unknown, unsupported (the weakest wins)."""
    if not verdicts:
        return "unknown"
    for worst in ("unsupported", "unknown", "generic"):
        if worst in verdicts:
            return worst
    return "native"


REQUIREMENTS = ("none", "any", "generic", "native")


def requirement_failure(ifname: str, require: str, report: dict):
    """None when the interface meets `require`, else a message naming it and what is missing."""
    if require == "none":
        return None
    native, generic, offload = report["native"], report["generic"], report["offload"]
    if require == "native":
        if native["supported"] == YES:
            return None
        return "%s: native XDP is required but native is %s (%s)" % (ifname, native["supported"], native["reason"])
    if require == "generic":
        if generic["supported"] == YES:
            return None
        return "%s: generic XDP is required but generic is %s (%s)" % (ifname, generic["supported"], generic["reason"])
    if YES in (native["supported"], generic["supported"], offload["supported"]):
        return None
    return "%s: XDP in any mode is required but native is %s, generic is %s, offload is %s (%s)" % (
        ifname,
        native["supported"],
        generic["supported"],
        offload["supported"],
        native["reason"],
    )


def assess(driver: str, kind: str, bus_info: str, release: str, flags, xdp_prog_type: dict) -> dict:
    """The decisions for one interface from its facts: native, generic, offload, max MTU, quirks, recommendation."""
    entry = lookup(driver, kind)
    native = decide_native(entry, driver, release, flags, bus_info)
    generic = decide_generic(xdp_prog_type)
    offload = decide_offload(entry, driver, release, flags)
    mtu, mtu_note = max_native_mtu(entry, flags, native)
    mode, verdict = recommend(native, generic)
    return {
        "native": native,
        "generic": generic,
        "offload": offload,
        "max_native_mtu": mtu,
        "max_native_mtu_note": mtu_note,
        "quirks": list(entry.quirks) if entry else [],
        "driver_table": entry.name if entry else None,
        "recommended_mode": mode,
        "verdict": verdict,
    }
