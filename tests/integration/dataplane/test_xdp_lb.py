"""xdp_lb packet by packet through BPF_PROG_TEST_RUN: verdict, output bytes, checksums, counter deltas.

Every forwarded case checks the backend the program chose against the Python
Maglev table and flow hash (dataplane/maglev.py), so the C and Python hashes agree.
"""

import ipaddress
import os
import random
import struct
import sys
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw, raw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lb_helpers  # noqa: E402
from harness import bpfbuild, paths  # noqa: E402
from harness.cpus import cpus  # noqa: E402
from harness.progtest import XDP_DROP, XDP_PASS, XDP_TX, LoadedProgram  # noqa: E402
from lb_helpers import LB, LB_MAC  # noqa: E402

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import maglev  # noqa: E402
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf  # noqa: E402
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import loader  # noqa: E402

pytestmark = pytest.mark.kernel

IF_MAC = "02:00:00:00:aa:01"
PEER_MAC = "02:00:00:00:cc:01"
C4, C6 = "198.51.100.7", "2001:db8:ffff::7"


def be(address, mac, weight=1):
    return {"address": address, "mac": mac, "weight": weight}


VIPS = [
    {
        "vip": "192.0.2.10",
        "port": 80,
        "proto": "tcp",
        "mode": "dsr",
        "backends": [be("198.51.100.1", "02:00:00:00:01:01"), be("198.51.100.2", "02:00:00:00:01:02"), be("198.51.100.3", "02:00:00:00:01:03", 2)],
    },
    {
        "vip": "192.0.2.10",
        "port": 53,
        "proto": "udp",
        "mode": "dsr",
        "backends": [be("198.51.100.1", "02:00:00:00:01:01"), be("198.51.100.2", "02:00:00:00:01:02")],
    },
    {
        "vip": "192.0.2.20",
        "port": 80,
        "proto": "tcp",
        "mode": "ipip",
        "backends": [be("198.51.100.11", "02:00:00:00:02:01"), be("198.51.100.12", "02:00:00:00:02:02")],
    },
    {
        "vip": "2001:db8::10",
        "port": 80,
        "proto": "tcp",
        "mode": "dsr",
        "backends": [be("2001:db8:1::1", "02:00:00:00:03:01"), be("2001:db8:1::2", "02:00:00:00:03:02")],
    },
    {
        "vip": "2001:db8::20",
        "port": 443,
        "proto": "tcp",
        "mode": "ipip",
        "backends": [be("2001:db8:2::1", "02:00:00:00:04:01"), be("2001:db8:2::2", "02:00:00:00:04:02")],
    },
    {"vip": "2001:db8::20", "port": 53, "proto": "udp", "mode": "ipip", "backends": [be("2001:db8:2::1", "02:00:00:00:04:01")]},
    {"vip": "192.0.2.30", "port": 80, "proto": "tcp", "mode": "ipip", "backends": [be("2001:db8:3::1", "02:00:00:00:05:01")]},
    {"vip": "192.0.2.40", "port": 80, "proto": "tcp", "mode": "dsr", "backends": [be("198.51.100.9", "02:00:00:00:06:01", 0)]},
]


# The connection-table tests run the program on every CPU this process may use (the table must hold for a
# flow that moves between CPUs: RSS, RPS, queue count changes); the other tests run wherever they are scheduled.
CPUS = cpus()


def next_cpu(cpu):
    """Another CPU than `cpu` (the same on a one-CPU machine)."""
    return CPUS[(CPUS.index(cpu) + 1) % len(CPUS)]


@pytest.fixture(scope="module")
def shared_lb():
    lb = LB(VIPS)
    yield lb
    lb.close()


@pytest.fixture
def lb(shared_lb):
    shared_lb.flush_conntrack()
    return shared_lb


@pytest.fixture
def fresh_lb():
    made = []

    def make(vips=None, **kwargs):
        made.append(LB(vips or VIPS, **kwargs))
        return made[-1]

    yield make
    for item in made:
        item.close()


def eth(*vlans):
    frame = Ether(dst=IF_MAC, src=PEER_MAC)
    for n, tag in enumerate(vlans):
        frame = frame / (Dot1AD(vlan=tag) if n == 0 and len(vlans) == 2 else Dot1Q(vlan=tag))
    return frame


def tcp4(dst="192.0.2.10", dport=80, sport=40000, flags="S", src=C4, vlans=(), **ip):
    return eth(*vlans) / IP(src=src, dst=dst, **ip) / TCP(sport=sport, dport=dport, flags=flags) / Raw(b"x" * 10)


def udp4(dst="192.0.2.10", dport=53, sport=40000, src=C4, vlans=()):
    return eth(*vlans) / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(b"q" * 12)


def tcp6(dst="2001:db8::10", dport=80, sport=40000, flags="S", src=C6, ext=(), vlans=(), **ip):
    pkt = eth(*vlans) / IPv6(src=src, dst=dst, **ip)
    for hdr in ext:
        pkt = pkt / hdr
    return pkt / TCP(sport=sport, dport=dport, flags=flags) / Raw(b"y" * 10)


def udp6(dst="2001:db8::20", dport=53, sport=40000, src=C6):
    return eth() / IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(b"q" * 12)


def flow_of(pkt):
    l3 = pkt[IP] if IP in pkt else pkt[IPv6]
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
    return l3.src, l3.dst, l4.sport, l4.dport, "tcp" if TCP in pkt else "udp"


def frames_with_sports(pkt, sports):
    """{sport: frame}: pkt's bytes with each source port (scapy builds one frame, slowly; the others are
    patched copies, whose L4 checksum is stale: xdp_lb does not read it)."""
    data = raw(pkt)
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
    off = len(data) - len(raw(l4))
    return {sport: data[:off] + struct.pack(">H", sport) + data[off + 2 :] for sport in sports}


def expected_frame(lb, data, backend_id, mode, l2len):
    """The frame xdp_lb must send for input bytes `data` to backend `backend_id`."""
    backend = lb.backend(backend_id)
    mac = lb_helpers.mac_bytes(backend["mac"]) + lb_helpers.mac_bytes(LB_MAC)
    if mode == "dsr":
        return mac + data[12:]
    inner = data[l2len:]
    version = inner[0] >> 4
    src, dst, sport, dport, proto = flow_of(Ether(data))
    h = maglev.flow_hash(src, dst, sport, dport, lb_helpers.PROTO[proto])
    if version == 4:
        tos, inner_len, nh = inner[1], struct.unpack(">H", inner[2:4])[0], 4
    else:
        tos, inner_len, nh = (struct.unpack(">H", inner[0:2])[0] >> 4) & 0xFF, struct.unpack(">H", inner[4:6])[0] + 40, 41
    if backend["family"] == "ipv4":
        net = ipaddress.ip_network(lb_helpers.TUNNEL_V4)
        hostmask = (1 << (32 - net.prefixlen)) - 1
        outer_src = str(ipaddress.IPv4Address(int(net.network_address) | (h & hostmask)))
        outer = raw(IP(src=outer_src, dst=backend["addr4"], proto=nh, tos=tos, ttl=64, id=0, flags=0, len=inner_len + 20))
        etype = b"\x08\x00"
    else:
        net = ipaddress.ip_network(lb_helpers.TUNNEL_V6)
        hostmask = (1 << min(32, 128 - net.prefixlen)) - 1
        outer_src = str(ipaddress.IPv6Address(int(net.network_address) | (h & hostmask)))
        outer = raw(IPv6(src=outer_src, dst=backend["addr6"], nh=nh, tc=tos, fl=h & 0xFFFFF, hlim=64, plen=inner_len))
        etype = b"\x86\xdd"
    return mac + data[12 : l2len - 2] + etype + outer + inner


def assert_checksums_valid(frame):
    """Re-parse with scapy and recompute every IPv4 header checksum and the innermost TCP/UDP checksum."""
    pkt = Ether(frame)
    n = 1
    while pkt.getlayer(IP, nb=n) is not None:
        header = pkt.getlayer(IP, nb=n).copy()
        stored = header.chksum
        header.chksum = None
        assert IP(raw(header)).chksum == stored, "bad IPv4 header checksum in IP layer %d" % n
        n += 1
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
    ip_layer = l4.underlayer
    while ip_layer is not None and not isinstance(ip_layer, (IP, IPv6)):
        ip_layer = ip_layer.underlayer
    copy = ip_layer.copy()
    stored = l4.chksum
    (copy[TCP] if TCP in copy else copy[UDP]).chksum = None
    again = ip_layer.__class__(raw(copy))
    assert (again[TCP] if TCP in again else again[UDP]).chksum == stored, "bad L4 checksum"


def test_checksum_verifier_catches_a_bad_outer_checksum():
    frame = bytearray(raw(eth() / IP(src="198.51.100.1", dst="198.51.100.2") / IP(src=C4, dst="192.0.2.10") / TCP()))
    assert_checksums_valid(bytes(frame))
    frame[24] ^= 0xFF
    with pytest.raises(AssertionError, match="IPv4 header checksum in IP layer 1"):
        assert_checksums_valid(bytes(frame))


# ------------------------------------------------------------ forwarded packets

FORWARD = [
    ("v4-tcp-syn-dsr", tcp4, "dsr", 14, "syn"),
    ("v4-tcp-syn-dsr-port2", lambda: tcp4(sport=1), "dsr", 14, "syn"),
    ("v4-tcp-syn-dsr-port3", lambda: tcp4(sport=65535), "dsr", 14, "syn"),
    ("v4-tcp-syn-dsr-src2", lambda: tcp4(src="198.51.100.200"), "dsr", 14, "syn"),
    ("v4-tcp-ack-dsr-miss", lambda: tcp4(flags="A"), "dsr", 14, "ct_miss"),
    ("v4-tcp-pshack-dsr-miss", lambda: tcp4(flags="PA", sport=5555), "dsr", 14, "ct_miss"),
    ("v4-tcp-fin-dsr", lambda: tcp4(flags="FA", sport=5556), "dsr", 14, "ct_miss"),
    ("v4-tcp-rst-dsr", lambda: tcp4(flags="R", sport=5557), "dsr", 14, "rst"),
    ("v4-udp-dsr", udp4, "dsr", 14, "ct_miss"),
    ("v4-udp-dsr-port2", lambda: udp4(sport=53), "dsr", 14, "ct_miss"),
    ("v4-vlan-dsr", lambda: tcp4(vlans=(100,)), "dsr", 18, "syn"),
    ("v4-qinq-dsr", lambda: tcp4(vlans=(100, 200)), "dsr", 22, "syn"),
    ("v4-ip-options-dsr", lambda: tcp4(options=[IPOption_RR(routers=["198.51.100.254"])]), "dsr", 14, "syn"),
    ("v4-padded-60-byte-frame-dsr", lambda: Ether(raw(eth() / IP(src=C4, dst="192.0.2.10") / TCP(sport=7, dport=80, flags="S")) + b"\0" * 6), "dsr", 14, "syn"),
    ("v4-tcp-ipip", lambda: tcp4(dst="192.0.2.20", tos=0xB8), "ipip", 14, "syn"),
    ("v4-tcp-ipip-ack", lambda: tcp4(dst="192.0.2.20", flags="A", sport=999), "ipip", 14, "ct_miss"),
    ("v4-tcp-ipip-vlan", lambda: tcp4(dst="192.0.2.20", vlans=(7,)), "ipip", 18, "syn"),
    ("v4-tcp-ipip-qinq", lambda: tcp4(dst="192.0.2.20", vlans=(7, 8)), "ipip", 22, "syn"),
    ("v4-tcp-ipip-options", lambda: tcp4(dst="192.0.2.20", options=[IPOption_RR(routers=["198.51.100.254"])]), "ipip", 14, "syn"),
    ("v4-in-v6-ipip", lambda: tcp4(dst="192.0.2.30", tos=0x20), "ipip", 14, "syn"),
    ("v6-tcp-syn-dsr", tcp6, "dsr", 14, "syn"),
    ("v6-tcp-ack-dsr", lambda: tcp6(flags="A", sport=3), "dsr", 14, "ct_miss"),
    ("v6-vlan-dsr", lambda: tcp6(vlans=(42,)), "dsr", 18, "syn"),
    ("v6-hbh-dsr", lambda: tcp6(ext=[IPv6ExtHdrHopByHop()]), "dsr", 14, "syn"),
    ("v6-hbh-dstopt-routing-dsr", lambda: tcp6(ext=[IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting()]), "dsr", 14, "syn"),
    ("v6-tcp-ip6ip6", lambda: tcp6(dst="2001:db8::20", dport=443, tc=0x28, fl=0x12345), "ipip", 14, "syn"),
    ("v6-tcp-ip6ip6-ext", lambda: tcp6(dst="2001:db8::20", dport=443, ext=[IPv6ExtHdrDestOpt()]), "ipip", 14, "syn"),
    ("v6-tcp-ip6ip6-qinq", lambda: tcp6(dst="2001:db8::20", dport=443, vlans=(1, 2)), "ipip", 22, "syn"),
    ("v6-udp-ip6ip6", udp6, "ipip", 14, "ct_miss"),
]


@pytest.mark.parametrize("name, build, mode, l2len, path", FORWARD, ids=[c[0] for c in FORWARD])
def test_vip_packet_is_forwarded_to_the_maglev_backend_with_correct_bytes_and_counters(lb, name, build, mode, l2len, path):
    pkt = build()
    data = raw(pkt)
    src, dst, sport, dport, proto = flow_of(pkt)
    bid = lb.maglev_backend(src, dst, sport, dport, proto)
    vid = lb.vip_id(dst, dport, proto)
    before = (lb.stats(), lb.vip_stats(vid), lb.backend_stats(bid))
    result = lb.run(data)
    assert result.retval == XDP_TX
    assert result.data == expected_frame(lb, data, bid, mode, l2len)
    assert_checksums_valid(result.data)
    stats, vstats, bstats = lb.stats(), lb.vip_stats(vid), lb.backend_stats(bid)
    assert vstats == (before[1][0] + 1, before[1][1] + len(data))
    assert bstats == (before[2][0] + 1, before[2][1] + len(data))
    changed = {k for k in stats if stats[k] != before[0][k]}
    assert changed == {"tx", path}


# ------------------------------------------------------------ passed untouched / dropped

PASS = [
    ("arp", lambda: Ether(dst="ff:ff:ff:ff:ff:ff", src=PEER_MAC) / ARP(pdst="192.0.2.10"), "pass_non_vip"),
    ("v4-not-a-vip", lambda: tcp4(dst="192.0.2.99"), "pass_non_vip"),
    ("v4-vip-wrong-port", lambda: tcp4(dport=81), "pass_non_vip"),
    ("v4-vip-wrong-proto", lambda: udp4(dport=80), "pass_non_vip"),
    ("v4-vip-udp-port-as-tcp", lambda: tcp4(dport=53), "pass_non_vip"),
    ("v4-icmp-to-vip", lambda: eth() / IP(src=C4, dst="192.0.2.10") / ICMP(), "pass_non_vip"),
    ("v4-vip-vlan-wrong-port", lambda: tcp4(dport=8080, vlans=(5,)), "pass_non_vip"),
    ("v6-not-a-vip", lambda: tcp6(dst="2001:db8::99"), "pass_non_vip"),
    ("v6-vip-wrong-port", lambda: tcp6(dport=8080), "pass_non_vip"),
    ("v6-vip-v4-address-port-pair", lambda: tcp6(dst="::ffff:192.0.2.10"), "pass_non_vip"),
    ("v4-first-fragment", lambda: eth() / IP(src=C4, dst="192.0.2.10", flags="MF") / TCP(sport=1, dport=80) / Raw(b"z" * 16), "pass_fragment"),
    ("v4-later-fragment", lambda: eth() / IP(src=C4, dst="192.0.2.10", frag=3, proto=6) / Raw(b"z" * 16), "pass_fragment"),
    ("v6-first-fragment", lambda: tcp6(ext=[IPv6ExtHdrFragment(m=1, offset=0)]), "pass_fragment"),
    ("v6-later-fragment", lambda: eth() / IPv6(src=C6, dst="2001:db8::10") / IPv6ExtHdrFragment(nh=6, offset=8) / Raw(b"z" * 16), "pass_fragment"),
    ("three-vlan-tags", lambda: eth() / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP(src=C4, dst="192.0.2.10") / TCP(dport=80), "pass_unparsed"),
    ("v6-too-many-ext-headers", lambda: tcp6(ext=[IPv6ExtHdrDestOpt() for dummy in range(7)]), "pass_unparsed"),
    ("v4-ihl-below-5", lambda: Ether(raw(tcp4())[:14] + bytes([0x44]) + raw(tcp4())[15:]), "pass_unparsed"),
    ("v4-version-6-in-v4-ethertype", lambda: Ether(raw(tcp4())[:14] + bytes([0x65]) + raw(tcp4())[15:]), "pass_unparsed"),
    ("v4-total-length-below-header", lambda: tcp4(len=12), "pass_unparsed"),
    ("v4-tcp-doff-below-5", lambda: eth() / IP(src=C4, dst="192.0.2.10") / TCP(dport=80, dataofs=4), "pass_unparsed"),
    ("v4-tcp-doff-past-end", lambda: eth() / IP(src=C4, dst="192.0.2.10") / TCP(dport=80, dataofs=15), "pass_unparsed"),
    ("v4-udp-length-below-8", lambda: eth() / IP(src=C4, dst="192.0.2.10") / UDP(dport=53, len=4), "pass_unparsed"),
    ("v6-version-4-in-v6-ethertype", lambda: Ether(raw(tcp6())[:14] + bytes([0x45]) + raw(tcp6())[15:]), "pass_unparsed"),
]


def _deltas(before, after):
    return {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after if after[k] != before[k]}


@pytest.mark.parametrize("name, build, stat", PASS, ids=[c[0] for c in PASS])
def test_packet_not_balanced_passes_untouched_and_is_counted(lb, name, build, stat):
    data = raw(build())
    before = lb.stats()
    result = lb.run(data)
    assert result.retval == XDP_PASS
    assert result.data == data
    assert _deltas(before, lb.stats()) == {stat: (1, len(data))}


def _boundaries(pkt):
    """Frame lengths at and around every header boundary of pkt (ending inside each header)."""
    data = raw(pkt)
    cuts = set()
    offset = 0
    layer = pkt
    while layer and not isinstance(layer, Raw):
        size = len(raw(layer)) - len(raw(layer.payload))
        for cut in (offset, offset + 1, offset + size // 2, offset + size - 1):
            if 14 <= cut < offset + size:
                cuts.add(cut)
        offset += size
        layer = layer.payload
    return data, sorted(cuts)


TRUNCATE = [
    ("v4-tcp", lambda: tcp4(flags="A")),
    ("v4-udp", udp4),
    ("v6-tcp", tcp6),
    ("v4-qinq-tcp", lambda: tcp4(vlans=(1, 2))),
    ("v6-ext-tcp", lambda: tcp6(ext=[IPv6ExtHdrHopByHop()])),
    ("v4-options-tcp", lambda: tcp4(options=[IPOption_RR(routers=["198.51.100.254"])])),
]


def _truncation_cases():
    out = []
    for name, build in TRUNCATE:
        data, cuts = _boundaries(build())
        for cut in cuts:
            out.append(pytest.param(data[:cut], id="%s-cut-%d" % (name, cut)))
    return out


@pytest.mark.parametrize("data", _truncation_cases())
def test_frame_truncated_inside_any_header_passes_untouched_as_unparsed(lb, data):
    before = lb.stats()
    result = lb.run(data)
    assert result.retval == XDP_PASS and result.data == data
    assert _deltas(before, lb.stats()) == {"pass_unparsed": (1, len(data))}


def test_vip_whose_backends_are_all_drained_drops_new_flows_and_counts_them(lb):
    data = raw(tcp4(dst="192.0.2.40"))
    before = lb.stats()
    assert lb.run(data).retval == XDP_DROP
    assert _deltas(before, lb.stats()) == {"drop_no_backend": (1, len(data)), "syn": (1, len(data))}


def test_ipip_without_a_tunnel_source_drops_and_counts_drop_encap(fresh_lb):
    lb = fresh_lb(tunnel_v4=None, tunnel_v6=None)
    data = raw(tcp4(dst="192.0.2.20"))
    before = lb.stats()
    assert lb.run(data).retval == XDP_DROP
    assert _deltas(before, lb.stats()) == {"drop_encap": (1, len(data)), "syn": (1, len(data))}
    # DSR VIPs do not need it
    assert lb.run(raw(tcp4())).retval == XDP_TX


def test_source_mac_defaults_to_the_frames_destination_when_no_lb_mac_is_configured(fresh_lb):
    lb = fresh_lb(lb_mac="00:00:00:00:00:00")
    out = lb.run(raw(tcp4())).data
    assert out[6:12] == lb_helpers.mac_bytes(IF_MAC)


# ------------------------------------------------------------ connection table


def chosen_backend(lb, result):
    mac = ":".join("%02x" % b for b in result.data[:6])
    return [bid for bid, value in lb.entries["lb_backends"] if value["mac"] == mac][0]


def point_ring_at(lb, vip, port, proto, bid):
    lb.write_ring(lb.entries["vip_ids"]["%s:%d/%s" % (vip, port, proto)], [bid] * lb.ring_size)


def other_backend(lb, first, names=("198.51.100.1", "198.51.100.2")):
    return next(b for b in (lb.backend_id(n) for n in names) if b != first)


@pytest.mark.parametrize("start", CPUS, ids=["cpu%d" % c for c in CPUS])
def test_established_flow_keeps_its_backend_on_every_cpu_when_the_maglev_table_changes_but_a_syn_repicks(fresh_lb, start):
    lb = fresh_lb()
    ack = raw(tcp4(flags="A", sport=1234))
    first = chosen_backend(lb, lb.run(ack, cpu=start))
    other = other_backend(lb, first)
    point_ring_at(lb, "192.0.2.10", 80, "tcp", other)
    for cpu in CPUS:
        before = lb.stats()
        assert chosen_backend(lb, lb.run(ack, cpu=cpu)) == first, "cpu %d" % cpu
        assert _deltas(before, lb.stats())["ct_hit"] == (1, len(ack))
    # a SYN (on another CPU) repicks and replaces the entry, for every CPU
    assert chosen_backend(lb, lb.run(raw(tcp4(flags="S", sport=1234)), cpu=next_cpu(start))) == other
    for cpu in CPUS:
        assert chosen_backend(lb, lb.run(ack, cpu=cpu)) == other, "cpu %d" % cpu


@pytest.mark.parametrize("start", CPUS, ids=["cpu%d" % c for c in CPUS])
def test_rst_is_forwarded_but_not_inserted(fresh_lb, start):
    lb = fresh_lb()
    rst = raw(tcp4(flags="R", sport=2222))
    first = chosen_backend(lb, lb.run(rst, cpu=start))
    other = other_backend(lb, first)
    point_ring_at(lb, "192.0.2.10", 80, "tcp", other)
    for cpu in CPUS:
        assert chosen_backend(lb, lb.run(rst, cpu=cpu)) == other  # still not inserted
    before = lb.stats()
    assert chosen_backend(lb, lb.run(raw(tcp4(flags="A", sport=2222)), cpu=start)) == other
    assert "ct_miss" in _deltas(before, lb.stats())


@pytest.mark.parametrize("start", CPUS, ids=["cpu%d" % c for c in CPUS])
def test_udp_entry_expires_after_the_configured_timeout_on_every_cpu(fresh_lb, start):
    # a timeout long enough that the refresh runs below fit in it on a loaded machine (150 ms did not at a load of 11)
    lb = fresh_lb(udp_timeout_ms=1000)
    pkt = raw(udp4(sport=4444))
    first = chosen_backend(lb, lb.run(pkt, cpu=start))
    other = other_backend(lb, first)
    point_ring_at(lb, "192.0.2.10", 53, "udp", other)
    for cpu in CPUS:
        assert chosen_backend(lb, lb.run(pkt, cpu=cpu)) == first  # refreshed: still within the timeout
    time.sleep(1.2)
    before = lb.stats()
    assert chosen_backend(lb, lb.run(pkt, cpu=next_cpu(start))) == other
    assert "udp_expired" in _deltas(before, lb.stats())
    for cpu in CPUS:
        assert chosen_backend(lb, lb.run(pkt, cpu=cpu)) == other


@pytest.mark.parametrize("start", CPUS, ids=["cpu%d" % c for c in CPUS])
def test_draining_backend_keeps_established_flows_on_every_cpu_and_gets_no_new_ones(fresh_lb, start):
    lb = fresh_lb()
    drained = lb.backend_id("198.51.100.3")
    acks = frames_with_sports(tcp4(flags="A"), range(1000, 1200))
    syns = frames_with_sports(tcp4(flags="S"), range(5000, 5200))
    flows = {}
    for sport, ack in acks.items():
        flows[sport] = chosen_backend(lb, lb.run(ack, cpu=start))
    on_drained = [s for s, b in flows.items() if b == drained]
    assert on_drained
    vips = [dict(v) for v in VIPS]
    vips[0] = dict(
        vips[0], backends=[be("198.51.100.1", "02:00:00:00:01:01"), be("198.51.100.2", "02:00:00:00:01:02"), be("198.51.100.3", "02:00:00:00:01:03", 0)]
    )
    lb.apply(vips)
    for n, sport in enumerate(on_drained):
        assert chosen_backend(lb, lb.run(acks[sport], cpu=CPUS[n % len(CPUS)])) == drained
    for sport, syn in syns.items():
        assert chosen_backend(lb, lb.run(syn, cpu=CPUS[sport % len(CPUS)])) != drained


@pytest.mark.parametrize("start", CPUS, ids=["cpu%d" % c for c in CPUS])
def test_flow_of_a_removed_backend_is_picked_again_from_the_ring_on_every_cpu(fresh_lb, start):
    lb = fresh_lb()
    ack = raw(tcp4(flags="A", sport=3333))
    first = chosen_backend(lb, lb.run(ack, cpu=start))
    other = other_backend(lb, first)
    point_ring_at(lb, "192.0.2.10", 80, "tcp", other)
    lb.remove_backend(first)
    for cpu in [next_cpu(start)] + CPUS:
        assert chosen_backend(lb, lb.run(ack, cpu=cpu)) == other


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_c_and_python_flow_hashes_pick_the_same_backend_on_a_full_size_ring(fresh_lb, family):
    vips = [
        {
            "vip": "192.0.2.10" if family == "ipv4" else "2001:db8::10",
            "port": 80,
            "proto": "tcp",
            "backends": [be("198.51.100.%d" % (100 + i), "02:00:00:09:00:%02x" % i) for i in range(1, 41)],
        }
    ]
    lb = fresh_lb(vips, ring_size=maglev.DEFAULT_RING_SIZE, rows=1)
    rng = random.Random(11)
    for _packet in range(300):
        sport = rng.randrange(1, 65536)
        if family == "ipv4":
            src = rng.choice(["192.0.2.%d", "198.51.100.%d", "203.0.113.%d"]) % rng.randrange(256)
            pkt = tcp4(src=src, sport=sport)
        else:
            src = str(ipaddress.IPv6Address(0x20010DB8 << 96 | rng.getrandbits(96)))
            pkt = tcp6(src=src, sport=sport)
        want = lb.maglev_backend(src, vips[0]["vip"], sport, 80, "tcp")
        assert chosen_backend(lb, lb.run(raw(pkt))) == want


def test_map_layouts_match_the_helpers_byte_encoding(shared_lb):
    obj = shared_lb.prog.obj
    sizes = {m.name: (m.key_size, m.value_size) for m in obj.maps()}
    assert sizes["lb_vips_v4"] == (12, 12) and sizes["lb_vips_v6"] == (24, 12)
    assert sizes["lb_backends"] == (4, 32) and sizes["lb_config"] == (4, 44)
    assert sizes["lb_conntrack_v4"] == (16, 16) and sizes["lb_conntrack_v6"] == (40, 16)
    assert sizes["lb_stats"] == (4, 16)
    assert obj.map("lb_conntrack_v4").type == obj.map("lb_conntrack_v6").type == "lru_hash"


def test_ipip_outer_source_and_flow_label_spread_flows_within_the_tunnel_prefixes(lb):
    sources4, sources6, labels = set(), set(), set()
    for sport in range(3000, 3064):
        out4 = Ether(lb.run(raw(tcp4(dst="192.0.2.20", sport=sport))).data)
        sources4.add(out4[IP].src)
        out6 = Ether(lb.run(raw(tcp6(dst="2001:db8::20", dport=443, sport=sport))).data)
        sources6.add(out6[IPv6].src)
        labels.add(out6[IPv6].fl)
    # the IPv4 tunnel prefix is a /24: 64 flows over 256 sources land on ~57 distinct ones when uniform
    assert len(sources4) >= 48 and all(ipaddress.ip_address(s) in ipaddress.ip_network("203.0.113.0/24") for s in sources4)
    assert len(sources6) >= 60 and all(ipaddress.ip_address(s) in ipaddress.ip_network("2001:db8:7e::/96") for s in sources6)
    assert len(labels) >= 60


@pytest.mark.parametrize("start", CPUS, ids=["cpu%d" % c for c in CPUS])
@pytest.mark.parametrize("build, vip, port", [(tcp6, "2001:db8::10", 80), (udp6, "2001:db8::20", 53)], ids=["v6-tcp", "v6-udp"])
def test_ipv6_established_flow_keeps_its_backend_on_every_cpu_when_the_ring_changes(fresh_lb, build, vip, port, start):
    lb = fresh_lb()
    kwargs = {"flags": "A"} if build is tcp6 else {}
    pkt = raw(build(sport=777, **kwargs))
    first = chosen_backend(lb, lb.run(pkt, cpu=start))
    ids = {bid for bid, value in lb.entries["lb_backends"] if value["family"] == "ipv6"} - {first}
    point_ring_at(lb, vip, port, "tcp" if build is tcp6 else "udp", min(ids))
    for cpu in CPUS:
        before = lb.stats()
        assert chosen_backend(lb, lb.run(pkt, cpu=cpu)) == first, "cpu %d" % cpu
        assert _deltas(before, lb.stats())["ct_hit"][0] == 1


def test_non_vip_packets_continue_the_xdp_chain_and_vip_packets_do_not(lb):
    with LoadedProgram(paths.bpf_object("xdp_count"), "xdp_count") as nxt:
        lb.prog.update("fleet_chain", struct.pack("<I", 1), struct.pack("<I", nxt.prog_fd))
        try:
            assert lb.run(raw(tcp4(dst="192.0.2.99"))).retval == XDP_PASS
            assert nxt.percpu_u64_sums("hits", struct.pack("<I", 0))[0] == 1
            assert lb.run(raw(tcp4())).retval == XDP_TX
            assert nxt.percpu_u64_sums("hits", struct.pack("<I", 0))[0] == 1
        finally:
            libbpf.map_delete(lb.prog.map_fd("fleet_chain"), struct.pack("<I", 1))


# ------------------------------------------------------------ connection table across CPUs, capacity


def many_vips():
    """8 VIPs (TCP and UDP, IPv4 and IPv6), each with 3 backends of its own (disjoint addresses and MACs)."""
    out = []
    for v in range(8):
        v6 = v >= 5
        out.append(
            {
                "vip": "2001:db8::1%02x" % v if v6 else "192.0.2.%d" % (100 + v),
                "port": 80,
                "proto": "udp" if v in (4, 7) else "tcp",
                "mode": "dsr",
                "backends": [
                    be("2001:db8:%x::%d" % (v + 1, b) if v6 else "198.51.100.%d" % (16 * (v + 1) + b), "02:00:00:%02x:00:%02x" % (v + 1, b))
                    for b in range(1, 4)
                ],
            }
        )
    return out


def vip_packet(vip, sport, flags):
    build = {(4, "tcp"): tcp4, (4, "udp"): udp4, (6, "tcp"): tcp6, (6, "udp"): udp6}[(ipaddress.ip_address(vip["vip"]).version, vip["proto"])]
    kwargs = {"flags": flags} if vip["proto"] == "tcp" else {}
    return build(dst=vip["vip"], dport=vip["port"], sport=sport, **kwargs)


@pytest.mark.parametrize("start", CPUS, ids=["cpu%d" % c for c in CPUS])
def test_flows_moved_to_another_cpu_keep_the_backend_chosen_for_them_never_another_vips(fresh_lb, start):
    # the way it failed: an LRU_PERCPU_HASH insert zero-filled the other CPUs' slots, and there backend id 0
    # (another VIP's backend) was taken for a connection-table hit
    vips = many_vips()
    lb = fresh_lb(vips)
    flows = []
    for n, vip in enumerate(vips):
        sports = range(41000 + 10 * n, 41010 + 10 * n)
        syns, acks = frames_with_sports(vip_packet(vip, 1, "S"), sports), frames_with_sports(vip_packet(vip, 1, "A"), sports)
        for sport in sports:
            want = lb.maglev_backend(C6 if ":" in vip["vip"] else C4, vip["vip"], sport, vip["port"], vip["proto"])
            assert chosen_backend(lb, lb.run(syns[sport], cpu=start)) == want
            flows.append((vip, sport, acks[sport], want))
    own = {lb.vip_id(v["vip"], v["port"], v["proto"]): {lb.backend_id(b["address"]) for b in v["backends"]} for v in vips}
    for cpu in [c for c in CPUS if c != start] + [start]:
        before = lb.stats()
        for vip, sport, ack, want in flows:
            got = chosen_backend(lb, lb.run(ack, cpu=cpu))
            assert got in own[lb.vip_id(vip["vip"], vip["port"], vip["proto"])], "flow %s:%d sent to another VIP's backend %d on cpu %d" % (
                vip["vip"],
                sport,
                got,
                cpu,
            )
            assert got == want, "cpu %d" % cpu
        deltas = _deltas(before, lb.stats())
        assert deltas["ct_hit"][0] == len(flows) and "ct_miss" not in deltas and "udp_expired" not in deltas


def test_connection_tables_are_shared_lru_hashes_with_one_lru_list_per_cpu(shared_lb):
    for name in ("lb_conntrack_v4", "lb_conntrack_v6"):
        info = libbpf.map_info(shared_lb.prog.map_fd(name))
        assert info["type"] == "lru_hash" and info["map_flags"] & loader.BPF_F_NO_COMMON_LRU, info


def conntrack_object(tmp_path_factory, **defines):
    """xdp_lb.c compiled with the clang arguments xdp_program uses for its `defines` option."""
    out = str(tmp_path_factory.mktemp("xdp_lb_ct") / "xdp_lb.o")
    return bpfbuild.compile_like_xdp_program(os.path.join(paths.BPF_SRC, "xdp_lb.c"), out, **defines), out


SMALL_PER_CPU = 64


@pytest.fixture(scope="module")
def small_table_object(tmp_path_factory):
    proc, out = conntrack_object(tmp_path_factory, FLEET_LB_CONNTRACK_PER_CPU=SMALL_PER_CPU)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("per_cpu", [None, SMALL_PER_CPU], ids=["default", "defined-64"])
def test_connection_table_capacity_is_the_declared_per_cpu_size_times_the_possible_cpus(per_cpu, small_table_object, tmp_path):
    path = small_table_object if per_cpu else paths.bpf_object("xdp_lb")
    per_cpu = per_cpu or 65536
    ncpus = libbpf.num_possible_cpus()
    info = loader.inspect(path, "xdp_lb", "xdp")
    for name in ("lb_conntrack_v4", "lb_conntrack_v6"):
        assert info.maps[name]["max_entries"] == per_cpu * ncpus
    # loaded by the loader, as xdp_program does: the maps it creates have that size, and a pin of them
    # compares as compatible with the object (an upgrade reuses it instead of seeing a false "incompatible")
    inst = loader.load_instance(info, 0, -1, {})
    try:
        for name in ("lb_conntrack_v4", "lb_conntrack_v6"):
            live = libbpf.map_info(inst.new_maps[name])
            assert live["max_entries"] == per_cpu * ncpus
            assert loader.incompatible(info.maps[name], live) == []
        # the same object loaded again with the first load's maps reused: accepted, the same maps
        again = loader.load_instance(info, 0, -1, {name: inst.new_maps[name] for name in ("lb_conntrack_v4", "lb_conntrack_v6")})
        again.close()
    finally:
        inst.close()
    with LB(VIPS, obj=path) as lb:
        for name in ("lb_conntrack_v4", "lb_conntrack_v6"):
            assert libbpf.map_info(lb.prog.map_fd(name))["max_entries"] == per_cpu * ncpus


def test_only_maps_flagged_no_common_lru_are_sized_per_cpu_and_an_impossible_total_is_refused():
    assert loader.created_max_entries("m", 100, 0, ncpus=64) == 100
    assert loader.created_max_entries("m", 100, loader.BPF_F_NO_COMMON_LRU | 0x1, ncpus=64) == 6400
    with pytest.raises(loader.LoadError, match=r"map m: 134217728 entries per CPU x 64 possible CPUs"):
        loader.created_max_entries("m", 1 << 27, loader.BPF_F_NO_COMMON_LRU, ncpus=64)


def test_the_old_total_size_define_is_refused_with_a_message_naming_the_per_cpu_one(tmp_path_factory):
    proc, dummy = conntrack_object(tmp_path_factory, FLEET_LB_CONNTRACK_ENTRIES=65536)
    assert proc.returncode != 0 and "FLEET_LB_CONNTRACK_PER_CPU" in proc.stderr


def test_a_full_connection_table_still_balances_new_flows_to_the_maglev_backend_on_every_cpu(fresh_lb, small_table_object):
    lb = fresh_lb(obj=small_table_object)
    capacity = SMALL_PER_CPU * libbpf.num_possible_cpus()
    for n, cpu in enumerate(CPUS):
        for family, pkt, key_size in (("v4", tcp4(flags="A"), 16), ("v6", tcp6(flags="A"), 40)):
            src, dst, dummy, dport, proto = flow_of(pkt)
            # three times this CPU's share of new flows on it: its LRU list is full and evicts; after the
            # last CPU, every CPU's list is full
            sports = range(10000 + n * 3 * SMALL_PER_CPU, 10000 + (n + 1) * 3 * SMALL_PER_CPU)
            frames = frames_with_sports(pkt, sports)
            before = lb.stats()
            for sport in sports:
                want = lb.maglev_backend(src, dst, sport, dport, proto)
                assert chosen_backend(lb, lb.run(frames[sport], cpu=cpu)) == want, (family, sport, cpu)
            assert _deltas(before, lb.stats())["ct_miss"][0] == len(sports)
            held = len(list(libbpf.map_keys(lb.prog.map_fd("lb_conntrack_" + family), key_size)))
            assert min(n + 1, len(CPUS)) * SMALL_PER_CPU // 2 <= held <= capacity, (family, held)
            # the most recent flows are established: connection-table hits, on every CPU
            for cpu2 in CPUS:
                before = lb.stats()
                for sport in sports[-8:]:
                    lb.run(frames[sport], cpu=cpu2)
                assert _deltas(before, lb.stats())["ct_hit"][0] == 8, (family, cpu, cpu2)
