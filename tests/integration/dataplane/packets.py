"""Test packets for the data-plane tables, built with scapy."""

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR  # noqa: F401
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NS, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw, raw

SRC_MAC, DST_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
DST4, DST6 = "192.0.2.1", "2001:db8::1"
PAYLOAD = Raw(b"x" * 18)


def eth(vlans: int = 0, qinq: bool = False):
    """Ethernet with vlans 802.1Q tags (the outer one 802.1ad when qinq)."""
    frame = Ether(src=SRC_MAC, dst=DST_MAC)
    for i in range(vlans):
        frame = frame / (Dot1AD(vlan=100 + i) if qinq and i == 0 else Dot1Q(vlan=100 + i))
    return frame


def udp4(src, dport=9999, vlans=0, **ip):
    return raw(eth(vlans) / IP(src=src, dst=DST4, **ip) / UDP(sport=40000, dport=dport) / PAYLOAD)


def tcp4(src, dport=80, vlans=0, flags="S", **ip):
    return raw(eth(vlans) / IP(src=src, dst=DST4, **ip) / TCP(sport=40000, dport=dport, flags=flags) / PAYLOAD)


def udp6(src, dport=9999, vlans=0, ext=()):
    pkt = eth(vlans) / IPv6(src=src, dst=DST6)
    for hdr in ext:
        pkt = pkt / hdr
    return raw(pkt / UDP(sport=40000, dport=dport) / PAYLOAD)


def tcp6(src, dport=80, vlans=0, ext=(), flags="S"):
    pkt = eth(vlans) / IPv6(src=src, dst=DST6)
    for hdr in ext:
        pkt = pkt / hdr
    return raw(pkt / TCP(sport=40000, dport=dport, flags=flags) / PAYLOAD)


def icmp4(src, icmp_type=8, code=0):
    return raw(eth() / IP(src=src, dst=DST4) / ICMP(type=icmp_type, code=code) / PAYLOAD)


def icmp6_echo(src):
    return raw(eth() / IPv6(src=src, dst=DST6) / ICMPv6EchoRequest() / PAYLOAD)


def icmp6_ns(src):
    return raw(eth() / IPv6(src=src, dst=DST6) / ICMPv6ND_NS(tgt=DST6))


def arp(vlans=0):
    return raw(eth(vlans) / ARP(psrc="192.0.2.9", pdst=DST4))


def frag4(src, proto_layer, offset=0, more=True):
    """An IPv4 fragment: offset in 8-byte units; offset 0 carries the L4 header."""
    flags = "MF" if more else 0
    if offset == 0:
        return raw(eth() / IP(src=src, dst=DST4, flags=flags, frag=0) / proto_layer / PAYLOAD)
    return raw(eth() / IP(src=src, dst=DST4, flags=flags, frag=offset, proto=17) / PAYLOAD)


def frag6(src, proto_layer, offset=0, more=True):
    hdr = IPv6ExtHdrFragment(offset=offset, m=int(more), id=7, nh=17)
    if offset == 0:
        return raw(eth() / IPv6(src=src, dst=DST6) / hdr / proto_layer / PAYLOAD)
    return raw(eth() / IPv6(src=src, dst=DST6) / hdr / PAYLOAD)


def opts4(src, dport=80):
    return raw(eth() / IP(src=src, dst=DST4, options=[IPOption_RR(routers=["198.51.100.254"])]) / TCP(sport=40000, dport=dport, flags="S") / PAYLOAD)


HBH, DSTOPT, ROUTING = IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting
__all__ = ["IPOption_RR", "AH", "ARP", "Dot1Q", "Ether", "HBH", "DSTOPT", "ROUTING", "ICMP", "IP", "IPv6", "TCP", "UDP", "Raw", "raw", "eth"]
