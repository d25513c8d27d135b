"""tc_egress, packet by packet through BPF_PROG_TEST_RUN.

Each case: an input frame (and skb mark), the expected TC verdict, the class
and outcome whose counter must move by one packet, and the expected output
frame: built by scapy from the input with the new DSCP and a checksum scapy
computes itself, so an incremental update that is off by one bit fails.
"""

import os
import random

import pytest
from egress_fixture import CLASSES, Egress, skb_ctx, skb_field
from filter_fixture import delta
from harness.progtest import TC_ACT_OK, TC_ACT_SHOT
from packets import DSTOPT, HBH, ICMP, IP, TCP, UDP, IPOption_RR, IPv6, Raw, arp, eth, raw
from scapy.layers.l2 import Ether

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import tc_egress_tables

pytestmark = pytest.mark.kernel

PAYLOAD = Raw(b"y" * 18)
SRC4, SRC6 = "192.0.2.10", "2001:db8::10"


def v4(dst, l4, tos=0, vlans=0, **ip):
    return eth(vlans) / IP(src=SRC4, dst=dst, tos=tos, **ip) / l4 / PAYLOAD


def v6(dst, l4, tc=0, fl=0, vlans=0, ext=()):
    pkt = eth(vlans) / IPv6(src=SRC6, dst=dst, tc=tc, fl=fl)
    for hdr in ext:
        pkt = pkt / hdr
    return pkt / l4 / PAYLOAD


def with_dscp(pkt, dscp):
    """The frame the program must emit: same packet, new DSCP, ECN kept, checksum recomputed by scapy."""
    out = Ether(raw(pkt))
    if IP in out:
        out[IP].tos = (dscp << 2) | (out[IP].tos & 3)
        del out[IP].chksum
    else:
        out[IPv6].tc = (dscp << 2) | (out[IPv6].tc & 3)
    return raw(out)


# (id, scapy packet, skb mark, verdict, class, outcome, dscp written or None)
CASES = [
    ("default-class-v4-untouched", v4("192.0.2.99", UDP(dport=9)), 0, TC_ACT_OK, 0, "pass", None),
    ("default-class-v6-untouched", v6("2001:db8::99", UDP(dport=9)), 0, TC_ACT_OK, 0, "pass", None),
    ("acl-drop-prefix-v4", v4("198.51.100.5", TCP(dport=80)), 0, TC_ACT_SHOT, 2, "drop", None),
    ("acl-drop-prefix-v6", v6("2001:db8:dead::5", UDP(dport=9)), 0, TC_ACT_SHOT, 2, "drop", None),
    ("acl-drop-port-smtp", v4("192.0.2.99", TCP(dport=25)), 0, TC_ACT_SHOT, 2, "drop", None),
    ("acl-drop-port-smtp-v6", v6("2001:db8::99", TCP(dport=25)), 0, TC_ACT_SHOT, 2, "drop", None),
    ("longest-prefix-ef", v4("198.51.100.200", UDP(dport=9)), 0, TC_ACT_OK, 1, "pass", 46),
    ("ef-keeps-ecn-ce", v4("198.51.100.200", UDP(dport=9), tos=0x03), 0, TC_ACT_OK, 1, "pass", 46),
    ("ef-keeps-ecn-ect0", v4("198.51.100.200", UDP(dport=9), tos=0x2A), 0, TC_ACT_OK, 1, "pass", 46),
    ("ef-already-set-untouched", v4("198.51.100.200", UDP(dport=9), tos=0xB9), 0, TC_ACT_OK, 1, "pass", 46),
    ("prefix-with-port-match", v4("203.0.113.7", UDP(dport=5060)), 0, TC_ACT_OK, 1, "pass", 46),
    ("prefix-with-port-other-port", v4("203.0.113.7", UDP(dport=5061)), 0, TC_ACT_OK, 0, "pass", None),
    ("prefix-with-port-other-proto", v4("203.0.113.7", TCP(dport=5060)), 0, TC_ACT_OK, 0, "pass", None),
    ("prefix-with-port-falls-to-port-rule", v4("203.0.113.7", TCP(dport=443)), 0, TC_ACT_OK, 3, "pass", 10),
    ("port-class-af11-v4", v4("192.0.2.99", TCP(dport=443)), 0, TC_ACT_OK, 3, "pass", 10),
    ("port-class-af11-v6", v6("2001:db8::99", TCP(dport=443)), 0, TC_ACT_OK, 3, "pass", 10),
    ("v6-prefix-class-keeps-flow-label-ecn", v6("2001:db8:beef::1", UDP(dport=9), tc=0x02, fl=0x12345), 0, TC_ACT_OK, 3, "pass", 10),
    ("v6-traffic-class-all-ones", v6("2001:db8:beef::1", UDP(dport=9), tc=0xFF, fl=0xFFFFF), 0, TC_ACT_OK, 3, "pass", 10),
    ("clear-dscp-keep-ecn", v4("192.0.2.99", UDP(dport=53), tos=0xB9), 0, TC_ACT_OK, 7, "pass", 0),
    ("clear-dscp-v6", v6("2001:db8::99", UDP(dport=53), tc=0xB9), 0, TC_ACT_OK, 7, "pass", 0),
    ("mark-beats-prefix-drop", v4("198.51.100.5", UDP(dport=9)), 0x10, TC_ACT_OK, 6, "pass", 34),
    ("mark-drops", v4("192.0.2.99", UDP(dport=9)), 0x20, TC_ACT_SHOT, 2, "drop", None),
    ("mark-v6", v6("2001:db8::99", UDP(dport=9)), 0x10, TC_ACT_OK, 6, "pass", 34),
    ("unknown-mark-classified-by-prefix", v4("198.51.100.200", UDP(dport=9)), 0x99, TC_ACT_OK, 1, "pass", 46),
    ("largest-direct-mark", v4("198.51.100.5", UDP(dport=9)), 0xFFFF, TC_ACT_OK, 7, "pass", 0),
    ("mark-above-direct-array", v4("198.51.100.5", UDP(dport=9)), 0x10000, TC_ACT_OK, 3, "pass", 10),
    ("unknown-mark-above-direct-array", v4("198.51.100.200", UDP(dport=9)), 0x20000, TC_ACT_OK, 1, "pass", 46),
    ("vlan1-rewrite", v4("192.0.2.99", TCP(dport=443), vlans=1), 0, TC_ACT_OK, 3, "pass", 10),
    ("vlan2-rewrite-v6", v6("2001:db8::99", TCP(dport=443), vlans=2), 0, TC_ACT_OK, 3, "pass", 10),
    ("ip-options-rewrite", eth() / IP(src=SRC4, dst="192.0.2.99", options=[IPOption_RR()]) / TCP(dport=443), 0, TC_ACT_OK, 3, "pass", 10),
    ("v6-ext-headers-port-class", v6("2001:db8::99", TCP(dport=443), ext=(HBH(), DSTOPT())), 0, TC_ACT_OK, 3, "pass", 10),
    ("later-fragment-prefix-class", eth() / IP(src=SRC4, dst="198.51.100.200", frag=10, proto=17) / PAYLOAD, 0, TC_ACT_OK, 1, "pass", 46),
    ("later-fragment-no-port-class", eth() / IP(src=SRC4, dst="192.0.2.99", frag=10, proto=6) / PAYLOAD, 0, TC_ACT_OK, 0, "pass", None),
    ("icmp-prefix-class", v4("198.51.100.200", ICMP()), 0, TC_ACT_OK, 1, "pass", 46),
    ("arp-untouched", Ether(arp()), 0, TC_ACT_OK, 0, "pass", None),
    ("truncated-untouched", Ether(raw(v4("198.51.100.200", UDP(dport=9)))[:38]), 0, TC_ACT_OK, 0, "pass", None),
]


def _random_checksum_cases(count):
    rng = random.Random(5)
    out = []
    for i in range(count):
        src = rng.choice(["192.0.2.%d", "198.51.100.%d", "203.0.113.%d"]) % rng.randrange(256)
        pkt = (
            eth()
            / IP(src=src, dst="192.0.2.%d" % rng.randrange(1, 255), tos=rng.randrange(256), ttl=rng.randrange(1, 256), id=rng.randrange(65536))
            / TCP(dport=443)
        )
        out.append(("checksum-random-%d" % i, pkt, 0, TC_ACT_OK, 3, "pass", 10))
    return out


CASES += _random_checksum_cases(16)


@pytest.fixture(scope="module")
def egress():
    prog = Egress()
    prog.load_reference()
    yield prog
    prog.close()


@pytest.mark.parametrize("name,pkt,mark,retval,class_id,outcome,dscp", CASES, ids=[c[0] for c in CASES])
def test_egress_case(egress, name, pkt, mark, retval, class_id, outcome, dscp):
    frame = raw(pkt)
    before = egress.counters()
    result = egress.run(frame, ctx=skb_ctx(mark=mark))
    assert result.retval == retval, name
    if retval == TC_ACT_OK:
        expected = frame if dscp is None else with_dscp(pkt, dscp)
        assert result.data == expected
        out = Ether(result.data)
        if IP in out and dscp is not None:
            check = out[IP].chksum
            del out[IP].chksum
            assert IP(raw(out[IP])).chksum == check  # scapy agrees with the incremental update
    assert delta(before, egress.counters()) == {(class_id, outcome): (1, len(frame))}


def test_egress_priority_set_by_class(egress):
    result = egress.run(raw(v4("198.51.100.200", UDP(dport=9))), ctx=skb_ctx())
    assert skb_field(result.ctx, "priority") == 6


SEC = 1_000_000_000
T0 = 2000 * SEC


def test_egress_rate_limit_drop_over_simulated_time(egress):
    frame = raw(v4("192.0.2.99", UDP(dport=9)))  # 60 bytes; class 4: 1000 B/s, burst 150
    assert len(frame) == 60
    egress.reset_bucket(4)
    steps = [
        (0, TC_ACT_OK),
        (0, TC_ACT_OK),
        (0, TC_ACT_SHOT),
        (SEC // 100, TC_ACT_SHOT),
        (3 * SEC // 100, TC_ACT_OK),
        (3 * SEC // 100, TC_ACT_SHOT),
        (SEC, TC_ACT_OK),
        (SEC, TC_ACT_OK),
        (SEC, TC_ACT_SHOT),
    ]
    before = egress.counters()
    got = []
    for offset, _want in steps:
        egress.configure(default_class=0, clock_ns=T0 + offset)
        got.append(egress.run(frame, ctx=skb_ctx(mark=0x30)).retval)
    egress.configure(default_class=0)
    assert got == [want for _off, want in steps]
    assert delta(before, egress.counters()) == {(4, "pass"): (5, 300), (4, "rate_limited"): (4, 240)}


def test_egress_pacing_sets_departure_times_until_the_horizon(egress):
    """1 MB/s, 60-byte frames: each departs 60 us after the previous; beyond 1 ms ahead they are dropped."""
    frame = raw(v4("192.0.2.99", UDP(dport=9)))
    egress.reset_bucket(5)
    egress.configure(default_class=0, clock_ns=T0)
    stamps, verdicts = [], []
    for _step in range(19):
        result = egress.run(frame, ctx=skb_ctx(mark=0x40))
        verdicts.append(result.retval)
        stamps.append(skb_field(result.ctx, "tstamp"))
    egress.configure(default_class=0)
    assert verdicts == [TC_ACT_OK] * 17 + [TC_ACT_SHOT] * 2
    assert stamps[0] == 0  # on time: left alone
    assert stamps[1:17] == [T0 + i * 60_000 for i in range(1, 17)]


DERIVE_CASES = [(1000, 150), (3, 1), (1, 2**40), (12_500_000_000, 9000), (2**64 - 1, 2**64 - 1), (125_000_007, 0)]


@pytest.mark.parametrize("rate_bps,burst_bytes", DERIVE_CASES)
def test_egress_program_derives_the_class_fields_user_space_would(egress, rate_bps, burst_bytes):
    """A class written with only rate_bps/burst_bytes (e.g. by a generic map writer) gets, on its first packet,
    the same ns_per_byte/burst_ns as tc_egress_tables.class_value() computes; a rate change is picked up."""
    derived = ("ns_per_byte", "burst_ns", "derived_rate_bps", "derived_burst_bytes")
    fields = {"action": "pass", "limit": "drop", "rate_bps": 5, "burst_bytes": 7}
    try:
        for rate, burst in ((5, 7), (rate_bps, burst_bytes)):
            fields.update(rate_bps=rate, burst_bytes=burst)
            egress.set_class(4, raw_fields=True, **fields)
            assert egress.get_class(4)["ns_per_byte"] == 0
            egress.run(raw(v4("192.0.2.99", UDP(dport=9))), ctx=skb_ctx(mark=0x30))
            got = egress.get_class(4)
            want = tc_egress_tables.class_value(fields)
            assert {k: got[k] for k in derived} == {k: want[k] for k in derived}
    finally:
        egress.set_class(4, **CLASSES[4])
        egress.reset_bucket(4)


SWEEP = {
    "v4-vlan1-tcp": v4("192.0.2.99", TCP(dport=443), vlans=1),
    "v4-vlan2-options-tcp": eth(2) / IP(src=SRC4, dst="198.51.100.200", options=[IPOption_RR()]) / TCP(dport=443),
    "v6-vlan1-ext-tcp": v6("2001:db8::99", TCP(dport=443), vlans=1, ext=(HBH(), DSTOPT())),
    "v6-vlan1-udp": v6("2001:db8:beef::1", UDP(dport=53), vlans=1),
}


@pytest.mark.parametrize("kind", list(SWEEP))
def test_egress_truncated_at_every_byte_passes_untouched(egress, kind):
    """A frame cut anywhere inside its headers is not rewritten and is counted in the default class.

    (A cut in the payload is not a truncated packet on egress: the stack's skbs carry the payload in
    fragments beyond the linear part, so the IP length is not compared with the linear length.)"""
    pkt = SWEEP[kind]
    frame = raw(pkt)
    headers = len(frame) - (len(pkt[Raw].load) if Raw in pkt else 0)
    before = egress.counters()
    cuts = range(14, headers)
    for cut in cuts:
        result = egress.run(frame[:cut], ctx=skb_ctx())
        assert result.retval == TC_ACT_OK and result.data == frame[:cut], "%s cut at %d" % (kind, cut)
    assert delta(before, egress.counters()) == {(0, "pass"): (len(cuts), sum(cuts))}


# ---------------------------------------------------------------- end to end on veth


def test_egress_on_veth_marks_dscp_and_drops_real_traffic(netns):
    """A TCX egress link on the sender's veth: the receiver sees DSCP EF (ECN kept, checksum valid) on
    UDP/5001, untouched UDP/5002, and nothing for the blocked destination."""
    import socket  # pylint: disable=import-outside-toplevel

    from dataplane_lab import attach, drain, entered, packet_socket, udp_socket  # pylint: disable=import-outside-toplevel

    from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf  # pylint: disable=import-outside-toplevel

    ns_a, ns_b = netns("ea"), netns("eb")
    ns_a.veth("va", "vb", peer_ns=ns_b, addr_a="192.0.2.1/24", addr_b="192.0.2.2/24")
    ns_b.ip("addr", "add", "192.0.2.3/24", "dev", "vb")
    prog = Egress()
    link = None
    try:
        prog.configure(default_class=0)
        prog.set_class(0, action="pass")
        prog.set_class(1, action="pass", set_dscp=1, dscp=46)
        prog.set_class(2, action="drop")
        prog.set_ports({("udp", 5001): 1})
        prog.load_dst_v4({"192.0.2.3/32": (2, 0, 0)})
        link = attach(ns_a, prog.prog_fd, "va", libbpf.ATTACH_TCX_EGRESS)
        sniffer = packet_socket(ns_b, "vb")
        rx1, rx2 = udp_socket(ns_b, "192.0.2.2", 5001), udp_socket(ns_b, "192.0.2.2", 5002)
        rx3 = udp_socket(ns_b, "192.0.2.3", 5001)
        with entered(ns_a):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x01)  # ECT(1): must survive the rewrite
            for i in range(10):
                tx.sendto(b"ef%d" % i, ("192.0.2.2", 5001))
                tx.sendto(b"be%d" % i, ("192.0.2.2", 5002))
                tx.sendto(b"blocked%d" % i, ("192.0.2.3", 5001))
            tx.close()
        got1, got2, got3 = drain(rx1), drain(rx2), drain(rx3)
        frames = [Ether(f) for f in drain(sniffer)]
        for sock in (rx1, rx2, rx3, sniffer):
            sock.close()

        assert len(got1) == 10 and len(got2) == 10 and got3 == []
        udp = [f for f in frames if IP in f and UDP in f]
        ef = [f for f in udp if f[UDP].dport == 5001 and f[IP].dst == "192.0.2.2"]
        be = [f for f in udp if f[UDP].dport == 5002]
        assert len(ef) == 10 and all(f[IP].tos == (46 << 2) | 1 for f in ef)
        assert len(be) == 10 and all(f[IP].tos == 1 for f in be)
        assert not [f for f in udp if f[IP].dst == "192.0.2.3"]
        for frame in ef:
            check = frame[IP].chksum
            del frame[IP].chksum
            assert IP(raw(frame[IP])).chksum == check
        stats = prog.counters()
        assert stats[(1, "pass")][0] == 10 and stats[(2, "drop")][0] == 10
    finally:
        if link is not None:
            os.close(link)
        prog.close()
