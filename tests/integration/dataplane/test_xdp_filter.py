"""xdp_filter, packet by packet through BPF_PROG_TEST_RUN.

Each case is an input frame, the expected XDP verdict, and the counters that
must move (verdict, reason and, when a rule decided, that rule) by exactly one
packet of the frame's length. The filter never rewrites, so the output bytes
must equal the input.
"""

import os
import struct

import pytest
from dataplane_btf import ipv4, lpm
from filter_fixture import Filter, delta
from harness.progtest import XDP_DROP, XDP_PASS, XDP_REDIRECT
from packets import (
    AH,
    DSTOPT,
    HBH,
    IP,
    ROUTING,
    TCP,
    UDP,
    IPOption_RR,
    IPv6,
    Raw,
    arp,
    eth,
    frag4,
    frag6,
    icmp4,
    icmp6_echo,
    icmp6_ns,
    opts4,
    raw,
    tcp4,
    tcp6,
    udp4,
    udp6,
)

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf

pytestmark = pytest.mark.kernel

ALLOW = {"default_verdict": "pass", "malformed": "drop"}
DENY = {"default_verdict": "drop", "malformed": "drop"}
NOBODY4, NOBODY6 = "192.0.2.200", "2001:db8::200"


def cfg(base, **extra):
    out = dict(base)
    out.update(extra)
    return out


# (id, config, frame, expected XDP return, verdict counted, reason, rule id or None)
CASES = [
    # policy modes
    ("default-allow-passes-unknown", ALLOW, udp4(NOBODY4), XDP_PASS, "pass", "default", None),
    ("default-deny-drops-unknown", DENY, udp4(NOBODY4), XDP_DROP, "drop", "default", None),
    ("default-allow-v6", ALLOW, udp6(NOBODY6), XDP_PASS, "pass", "default", None),
    ("default-deny-v6", DENY, udp6(NOBODY6), XDP_DROP, "drop", "default", None),
    # exact sources
    ("exact-deny-v4", ALLOW, udp4("192.0.2.66"), XDP_DROP, "drop", "source", 1),
    ("exact-deny-v4-even-to-allowed-port", ALLOW, tcp4("192.0.2.66", 80), XDP_DROP, "drop", "source", 1),
    ("exact-allow-v4-in-default-deny", DENY, udp4("192.0.2.77"), XDP_PASS, "pass", "source", 2),
    ("exact-allow-v4-beats-port-drop", DENY, udp4("192.0.2.77", 53), XDP_PASS, "pass", "source", 2),
    ("exact-deny-v6", ALLOW, udp6("2001:db8::66"), XDP_DROP, "drop", "source", 3),
    ("exact-allow-v6-in-default-deny", DENY, tcp6("2001:db8::77", 9), XDP_PASS, "pass", "source", 4),
    # prefixes
    ("prefix-deny-v4", ALLOW, udp4("198.51.100.5"), XDP_DROP, "drop", "source", 5),
    ("prefix-longest-match-allows", DENY, udp4("198.51.100.200"), XDP_PASS, "pass", "source", 6),
    ("prefix-edge-low", ALLOW, udp4("198.51.100.0"), XDP_DROP, "drop", "source", 5),
    ("prefix-edge-high", DENY, udp4("198.51.100.255"), XDP_PASS, "pass", "source", 6),
    ("prefix-outside", ALLOW, udp4("192.0.2.201"), XDP_PASS, "pass", "default", None),
    ("prefix-deny-v6", ALLOW, udp6("2001:db8:bad::1"), XDP_DROP, "drop", "source", 8),
    ("prefix-longest-match-v6", DENY, udp6("2001:db8:bad:1::9"), XDP_PASS, "pass", "source", 9),
    ("prefix-outside-v6", DENY, udp6("2001:db8:bae::1"), XDP_DROP, "drop", "default", None),
    # ports
    ("tcp-80-pass-in-default-deny", DENY, tcp4(NOBODY4, 80), XDP_PASS, "pass", "port", 10),
    ("udp-53-drop-in-default-allow", ALLOW, udp4(NOBODY4, 53), XDP_DROP, "drop", "port", 11),
    ("tcp-53-not-udp-rule", ALLOW, tcp4(NOBODY4, 53), XDP_PASS, "pass", "default", None),
    ("udp-80-not-tcp-rule", DENY, udp4(NOBODY4, 80), XDP_DROP, "drop", "default", None),
    ("tcp-443-v6", DENY, tcp6(NOBODY6, 443), XDP_PASS, "pass", "port", 12),
    ("udp-53-v6", ALLOW, udp6(NOBODY6, 53), XDP_DROP, "drop", "port", 11),
    (
        "tcp-with-options-80",
        DENY,
        raw(eth() / IP(src=NOBODY4, dst="192.0.2.1") / TCP(dport=80, options=[("MSS", 1460), ("WScale", 7), ("NOP", None)])),
        XDP_PASS,
        "pass",
        "port",
        10,
    ),
    ("tcp-rst-80", DENY, tcp4(NOBODY4, 80, flags="R"), XDP_PASS, "pass", "port", 10),
    # ICMP
    ("icmp-echo-request-dropped", ALLOW, icmp4(NOBODY4, 8), XDP_DROP, "drop", "port", 13),
    ("icmp-echo-reply-passed", DENY, icmp4(NOBODY4, 0), XDP_PASS, "pass", "port", 15),
    ("icmp-unreachable-default", DENY, icmp4(NOBODY4, 3, 1), XDP_DROP, "drop", "default", None),
    ("icmp-unreachable-allow", ALLOW, icmp4(NOBODY4, 3, 4), XDP_PASS, "pass", "default", None),
    ("icmpv6-echo-passed", DENY, icmp6_echo(NOBODY6), XDP_PASS, "pass", "port", 14),
    ("icmpv6-ns-default-deny", DENY, icmp6_ns(NOBODY6), XDP_DROP, "drop", "default", None),
    ("icmp-from-denied-source", DENY, icmp4("192.0.2.66", 0), XDP_DROP, "drop", "source", 1),
    # management list
    ("mgmt-ssh-in-default-deny", DENY, tcp4("192.0.2.17", 22), XDP_PASS, "pass", "mgmt", None),
    ("mgmt-wins-over-exact-deny", DENY, tcp4("192.0.2.21", 22), XDP_PASS, "pass", "mgmt", None),
    ("mgmt-wins-over-rate-limit", cfg(DENY, rate_pps=1, burst_packets=0, clock_ns=1), tcp4("192.0.2.18", 22), XDP_PASS, "pass", "mgmt", None),
    ("mgmt-source-other-port-not-mgmt", DENY, tcp4("192.0.2.17", 23), XDP_DROP, "drop", "default", None),
    ("mgmt-denied-host-other-port", ALLOW, tcp4("192.0.2.21", 23), XDP_DROP, "drop", "source", 16),
    ("mgmt-port-from-outsider", DENY, tcp4(NOBODY4, 22), XDP_DROP, "drop", "default", None),
    ("mgmt-port-udp-not-mgmt", DENY, udp4("192.0.2.17", 22), XDP_DROP, "drop", "default", None),
    ("mgmt-v6", DENY, tcp6("2001:db8:9::1", 22), XDP_PASS, "pass", "mgmt", None),
    ("mgmt-v6-outsider", DENY, tcp6("2001:db8:a::1", 22), XDP_DROP, "drop", "default", None),
    ("mgmt-match-any", cfg(DENY, mgmt_match="any"), udp4("192.0.2.17", 5000), XDP_PASS, "pass", "mgmt", None),
    ("mgmt-match-any-outsider", cfg(DENY, mgmt_match="any"), udp4(NOBODY4, 5000), XDP_DROP, "drop", "default", None),
    (
        "mgmt-wins-over-ip-options-drop",
        cfg(DENY, ip_options="drop"),
        raw(eth() / IP(src="192.0.2.17", dst="192.0.2.1", options=[IPOption_RR()]) / TCP(dport=22)),
        XDP_PASS,
        "pass",
        "mgmt",
        None,
    ),
    # VLAN
    ("vlan1-port-rule", ALLOW, udp4(NOBODY4, 53, vlans=1), XDP_DROP, "drop", "port", 11),
    ("vlan2-port-rule", DENY, tcp4(NOBODY4, 80, vlans=2), XDP_PASS, "pass", "port", 10),
    ("vlan2-qinq-88a8", DENY, raw(eth(2, qinq=True) / IP(src=NOBODY4, dst="192.0.2.1") / TCP(dport=80)), XDP_PASS, "pass", "port", 10),
    ("vlan1-source-deny-v6", ALLOW, udp6("2001:db8::66", vlans=1), XDP_DROP, "drop", "source", 3),
    ("vlan3-too-deep-dropped", ALLOW, udp4(NOBODY4, vlans=3), XDP_DROP, "drop", "too_deep", None),
    ("vlan3-too-deep-rules-default", cfg(ALLOW, malformed="rules"), udp4(NOBODY4, vlans=3), XDP_PASS, "pass", "too_deep", None),
    ("arp-passes", DENY, arp(), XDP_PASS, "pass", "non_ip", None),
    ("arp-in-vlan-passes", DENY, arp(1), XDP_PASS, "pass", "non_ip", None),
    ("arp-dropped-when-told", cfg(ALLOW, non_ip="drop"), arp(), XDP_DROP, "drop", "non_ip", None),
    # IPv6 extension headers
    ("v6-hbh-dstopt-reach-port", DENY, tcp6(NOBODY6, 80, ext=(HBH(), DSTOPT())), XDP_PASS, "pass", "port", 10),
    ("v6-routing-reach-port", ALLOW, udp6(NOBODY6, 53, ext=(ROUTING(addresses=["2001:db8::9"]),)), XDP_DROP, "drop", "port", 11),
    ("v6-ah-reach-port", DENY, tcp6(NOBODY6, 80, ext=(AH(nh=6, payloadlen=4, spi=1, icv=b"\0" * 12),)), XDP_PASS, "pass", "port", 10),
    ("v6-six-ext-headers", DENY, tcp6(NOBODY6, 80, ext=(HBH(), DSTOPT(), ROUTING()) + (DSTOPT(),) * 3), XDP_PASS, "pass", "port", 10),
    ("v6-seven-ext-headers-too-deep", ALLOW, tcp6(NOBODY6, 80, ext=(HBH(),) + (DSTOPT(),) * 6), XDP_DROP, "drop", "too_deep", None),
    ("v6-ext-headers-policy-drop", cfg(ALLOW, ip_options="drop"), tcp6(NOBODY6, 80, ext=(HBH(),)), XDP_DROP, "drop", "ip_options", None),
    ("v6-ext-headers-policy-pass", cfg(DENY, ip_options="pass"), udp6(NOBODY6, 9, ext=(DSTOPT(),)), XDP_PASS, "pass", "ip_options", None),
    # IPv4 options
    ("v4-options-rules", DENY, opts4(NOBODY4, 80), XDP_PASS, "pass", "port", 10),
    ("v4-options-drop", cfg(ALLOW, ip_options="drop"), opts4(NOBODY4, 80), XDP_DROP, "drop", "ip_options", None),
    ("v4-options-pass", cfg(DENY, ip_options="pass"), opts4(NOBODY4, 9), XDP_PASS, "pass", "ip_options", None),
    # fragments
    ("v4-first-fragment-port-rule", ALLOW, frag4(NOBODY4, UDP(dport=53)), XDP_DROP, "drop", "port", 11),
    ("v4-first-fragment-tcp80", DENY, frag4(NOBODY4, TCP(dport=80)), XDP_PASS, "pass", "port", 10),
    ("v4-later-fragment-drop", cfg(ALLOW, fragments="drop"), frag4(NOBODY4, None, 3), XDP_DROP, "drop", "fragment", None),
    ("v4-last-fragment-drop", cfg(ALLOW, fragments="drop"), frag4(NOBODY4, None, 3, more=False), XDP_DROP, "drop", "fragment", None),
    ("v4-later-fragment-pass", cfg(DENY, fragments="pass"), frag4(NOBODY4, None, 3), XDP_PASS, "pass", "fragment", None),
    ("v4-later-fragment-rules-default", ALLOW, frag4(NOBODY4, None, 3), XDP_PASS, "pass", "default", None),
    ("v4-later-fragment-rules-source", ALLOW, frag4("192.0.2.66", None, 3), XDP_DROP, "drop", "source", 1),
    ("v6-first-fragment-port-rule", ALLOW, frag6(NOBODY6, UDP(dport=53)), XDP_DROP, "drop", "port", 11),
    ("v6-later-fragment-drop", cfg(ALLOW, fragments="drop"), frag6(NOBODY6, None, 5), XDP_DROP, "drop", "fragment", None),
    ("v6-later-fragment-pass", cfg(DENY, fragments="pass"), frag6(NOBODY6, None, 5), XDP_PASS, "pass", "fragment", None),
    ("v6-later-fragment-rules-source", DENY, frag6("2001:db8::77", None, 5), XDP_PASS, "pass", "source", 4),
    # malformed
    ("v4-ihl-4", ALLOW, raw(eth() / IP(src=NOBODY4, dst="192.0.2.1", ihl=4) / UDP()), XDP_DROP, "drop", "malformed", None),
    ("v4-version-5", ALLOW, raw(eth() / IP(src=NOBODY4, dst="192.0.2.1", version=5) / UDP()), XDP_DROP, "drop", "malformed", None),
    ("v4-total-length-below-header", ALLOW, raw(eth() / IP(src=NOBODY4, dst="192.0.2.1", len=10) / UDP()), XDP_DROP, "drop", "malformed", None),
    ("v4-total-length-past-frame", ALLOW, raw(eth() / IP(src=NOBODY4, dst="192.0.2.1", len=400) / UDP()), XDP_DROP, "drop", "truncated", None),
    ("tcp-doff-4", ALLOW, raw(eth() / IP(src=NOBODY4, dst="192.0.2.1") / TCP(dataofs=4)), XDP_DROP, "drop", "malformed", None),
    ("udp-length-4", ALLOW, raw(eth() / IP(src=NOBODY4, dst="192.0.2.1") / UDP(len=4)), XDP_DROP, "drop", "malformed", None),
    ("v6-version-4", ALLOW, raw(eth() / IPv6(src=NOBODY6, dst="2001:db8::1", version=4) / UDP()), XDP_DROP, "drop", "malformed", None),
    ("v6-payload-length-past-frame", ALLOW, raw(eth() / IPv6(src=NOBODY6, dst="2001:db8::1", plen=900) / UDP()), XDP_DROP, "drop", "truncated", None),
    ("malformed-policy-pass", cfg(DENY, malformed="pass"), raw(eth() / IP(src=NOBODY4, ihl=4) / UDP()), XDP_PASS, "pass", "malformed", None),
    ("malformed-policy-rules-deny", cfg(DENY, malformed="rules"), raw(eth() / IP(src=NOBODY4, ihl=4) / UDP()), XDP_DROP, "drop", "malformed", None),
    ("ethernet-padding-ok", DENY, raw(eth() / IP(src=NOBODY4, dst="192.0.2.1") / TCP(dport=80) / Raw(b"\0" * 30)), XDP_PASS, "pass", "port", 10),
    ("ethernet-header-only", ALLOW, raw(eth())[:12] + b"\x08\x00", XDP_DROP, "drop", "truncated", None),
    # redirect (empty devmap slot: the fallback is XDP_PASS)
    ("redirect-source-prefix", ALLOW, udp4("203.0.113.9"), XDP_PASS, "redirect", "source", 7),
    ("redirect-port", ALLOW, tcp4(NOBODY4, 8080), XDP_PASS, "redirect", "port", 17),
    ("redirect-default", cfg(ALLOW, default_verdict="redirect", redirect_slot=3), udp4(NOBODY4), XDP_PASS, "redirect", "default", None),
]


@pytest.fixture(scope="module", params=["table", "lpm"])
def flt(request):
    """The filter with the reference rules, once per IPv4 source lookup (stride table, LPM trie)."""
    prog = Filter(v4_lookup=request.param)
    prog.load_reference_rules()
    yield prog
    prog.close()


def run_case(flt, config, frame):
    flt.configure(**config)
    before = flt.counters()
    result = flt.run(frame)
    return result, delta(before, flt.counters())


def expected_delta(frame, verdict, reason, rule):
    one = (1, len(frame))
    out = {("verdict", verdict): one, ("reason", reason): one}
    if rule is not None:
        out[("rule", rule)] = one
    return out


@pytest.mark.parametrize("name,config,frame,retval,verdict,reason,rule", CASES, ids=[c[0] for c in CASES])
def test_filter_case(flt, name, config, frame, retval, verdict, reason, rule):
    result, moved = run_case(flt, config, frame)
    assert result.retval == retval, name
    assert result.data == frame  # the filter never rewrites
    assert moved == expected_delta(frame, verdict, reason, rule)


# ---------------------------------------------------------------- truncation at every header byte

SWEEP_FRAMES = {
    "tcp4": tcp4(NOBODY4, 80),
    "udp4-vlan1": udp4(NOBODY4, 53, vlans=1),
    "tcp4-vlan2": tcp4(NOBODY4, 80, vlans=2),
    "tcp4-ip-options": opts4(NOBODY4, 80),
    "icmp4": icmp4(NOBODY4, 8),
    "udp6": udp6(NOBODY6, 53),
    "tcp6-hbh-routing-dstopt": tcp6(NOBODY6, 80, ext=(HBH(), ROUTING(addresses=["2001:db8::9"]), DSTOPT())),
    "tcp6-ah": tcp6(NOBODY6, 80, ext=(AH(nh=6, payloadlen=4, spi=1, icv=b"\0" * 12),)),
    "udp6-first-fragment": frag6(NOBODY6, UDP(dport=53)),
    "icmp6": icmp6_echo(NOBODY6),
}


@pytest.mark.parametrize("kind", list(SWEEP_FRAMES))
def test_filter_truncated_at_every_byte_is_dropped_and_counted(flt, kind):
    """Every cut of the frame from the end of the MAC addresses to one byte short is 'truncated'."""
    frame = SWEEP_FRAMES[kind]
    flt.configure(**ALLOW)
    whole = flt.run(frame)
    assert whole.retval == XDP_PASS or kind in ("udp4-vlan1", "icmp4", "udp6", "udp6-first-fragment")
    before = flt.counters()
    cuts = range(14, len(frame))
    for cut in cuts:
        result = flt.run(frame[:cut])
        assert result.retval == XDP_DROP, "%s cut at %d passed" % (kind, cut)
    moved = delta(before, flt.counters())
    total = (len(cuts), sum(cuts))
    assert moved == {("verdict", "drop"): total, ("reason", "truncated"): total}


def test_filter_truncated_follows_malformed_policy(flt):
    frame = tcp4(NOBODY4, 80)[:40]
    flt.configure(**cfg(DENY, malformed="pass"))
    assert flt.run(frame).retval == XDP_PASS
    flt.configure(**cfg(ALLOW, malformed="rules"))
    assert flt.run(frame).retval == XDP_PASS
    flt.configure(**cfg(DENY, malformed="rules"))
    assert flt.run(frame).retval == XDP_DROP


# ---------------------------------------------------------------- the classic policy


def test_classic_policy_pass_tcp80_drop_udp53_drop_rest_counted_per_cpu():
    """'pass TCP to port 80, drop UDP to port 53, drop everything else, count passes and drops per CPU'."""
    prog = Filter()
    try:
        prog.configure(default_verdict="drop")
        prog.fill("filter_ports", prog.port_entries({("tcp", 80): ("pass", 1), ("udp", 53): ("drop", 2)}))
        traffic = [tcp4(NOBODY4, 80)] * 5 + [udp4(NOBODY4, 53)] * 3
        traffic += [tcp4(NOBODY4, 22), udp4(NOBODY4, 80), icmp4(NOBODY4), tcp6(NOBODY6, 80)]
        verdicts = [prog.run(frame).retval for frame in traffic]
        assert verdicts == [XDP_PASS] * 5 + [XDP_DROP] * 6 + [XDP_PASS]
        # per CPU: one value per possible CPU, their sum is the total
        stride = 16
        for name, packets in (("pass", 6), ("drop", 6)):
            per_cpu = [0] * prog.ncpus
            for reason in ("port", "default"):
                key = prog.reason[reason] * prog.verdict["max"] + prog.verdict[name]
                raw_value = prog.lookup("filter_stats", struct.pack("<I", key))
                for cpu in range(prog.ncpus):
                    per_cpu[cpu] += struct.unpack_from("<QQ", raw_value, cpu * stride)[0]
            assert len(per_cpu) == libbpf.num_possible_cpus()
            assert sum(per_cpu) == packets
        assert prog.percpu_u64_sums("filter_rule_stats", struct.pack("<I", 1))[0] == 6  # TCP/80 over IPv4 and IPv6
        assert prog.percpu_u64_sums("filter_rule_stats", struct.pack("<I", 2))[0] == 3
    finally:
        prog.close()


# ---------------------------------------------------------------- atomic rule-set swap


def test_rule_set_swap_replaces_the_whole_source_list_in_one_update(flt):
    flt.configure(**ALLOW)
    assert flt.run(udp4("192.0.2.66")).retval == XDP_DROP
    assert flt.run(udp4("192.0.2.201")).retval == XDP_PASS
    outer = "filter_v4" if flt.v4_lookup == "table" else "filter_src_v4"
    new_rules = {"192.0.2.201": ("drop", 18), "192.0.2.202": ("drop", 18)}
    if outer == "filter_v4":
        entries = flt.stride_entries(new_rules)
    else:
        entries = {ipv4(addr): flt.rule(*rule) for addr, rule in new_rules.items()}
    old_fd = flt.inner_fd(outer)
    new_fd = flt.new_rule_set(outer, entries)
    try:
        flt.swap(outer, new_fd)
        assert flt.run(udp4("192.0.2.66")).retval == XDP_PASS
        assert flt.run(udp4("192.0.2.201")).retval == XDP_DROP
        assert flt.run(udp4("192.0.2.202")).retval == XDP_DROP
        assert flt.percpu_u64_sums("filter_rule_stats", struct.pack("<I", 18))[0] == 2
    finally:
        flt.swap(outer, old_fd)
        os.close(new_fd)
        os.close(old_fd)
    assert flt.run(udp4("192.0.2.66")).retval == XDP_DROP
    assert flt.run(udp4("192.0.2.201")).retval == XDP_PASS


def test_rule_set_swap_of_prefixes_and_ports(flt):
    flt.configure(**DENY)
    outer = "filter_v4" if flt.v4_lookup == "table" else "filter_pfx_v4"
    if outer == "filter_v4":
        entries = flt.stride_entries({"192.0.2.0/24": ("pass", 19)})
    else:
        entries = {lpm("192.0.2.0/24"): flt.rule("pass", 19)}
    old_pfx, old_ports = flt.inner_fd(outer), flt.inner_fd("filter_ports")
    new_pfx = flt.new_rule_set(outer, entries)
    new_ports = flt.new_rule_set("filter_ports", flt.port_entries({("udp", 9999): ("pass", 19)}))
    try:
        assert flt.run(udp4("192.0.2.210", 9999)).retval == XDP_DROP
        flt.swap(outer, new_pfx)
        assert flt.run(udp4("192.0.2.210", 1)).retval == XDP_PASS
        assert flt.run(udp4("198.51.100.200", 1)).retval == XDP_DROP  # the old /25 allow is gone
        if outer == "filter_v4":  # the stride table holds exact addresses too: they went with the old set
            assert flt.run(udp4("192.0.2.66", 1)).retval == XDP_PASS
        flt.swap("filter_ports", new_ports)
        assert flt.run(udp4("203.0.113.200", 9999)).retval == XDP_PASS
        assert flt.run(tcp4("203.0.113.1", 80)).retval == XDP_DROP  # tcp/80 left with the old set
    finally:
        flt.swap(outer, old_pfx)
        flt.swap("filter_ports", old_ports)
        for fd in (new_pfx, new_ports, old_pfx, old_ports):
            os.close(fd)


# ---------------------------------------------------------------- the stride table's /16 flags "hosts" and "blocks"

STRIDE_RULES = {
    "192.0.2.66": ("drop", 1),
    "192.0.2.160/27": ("pass", 2),
    "192.0.2.0/24": ("drop", 3),
    "192.0.9.0/24": ("redirect", 4),
    "192.0.0.0/16": ("pass", 5),
    "198.51.100.7": ("drop", 6),
    "203.0.113.0/24": ("drop", 7),
}
# (source, verdict, rule id): under 192.0/16 exact addresses, a /27 and /24s (walked level by level); under 198.51/16
# only an exact address (/16 then /32); under 203.0/16 only a /24 rule (/16 then /24)
STRIDE_PROBES = [
    ("192.0.2.66", XDP_DROP, 1),
    ("192.0.2.170", XDP_PASS, 2),
    ("192.0.2.5", XDP_DROP, 3),
    ("192.0.1.5", XDP_PASS, 5),
    ("192.0.9.1", XDP_PASS, 4),  # redirect to an empty slot: pass
    ("192.0.200.1", XDP_PASS, 5),
    ("198.51.100.7", XDP_DROP, 6),
    ("198.51.100.8", XDP_PASS, None),  # same /24 as an exact address, no rule of its own
    ("198.51.101.7", XDP_PASS, None),
    ("203.0.113.1", XDP_DROP, 7),
    ("203.0.112.1", XDP_PASS, None),
]


@pytest.mark.parametrize("below", ["with", "without"])
def test_stride_table_answers_the_same_with_and_without_the_16_flags_hosts_and_blocks(fresh, below):
    """The filter takes a /16 entry's "hosts" or "blocks" to skip a level; a table written without them (as before
    they existed) is walked level by level: the same verdict and rule counter either way."""
    fresh.fill("filter_v4", fresh.stride_entries(STRIDE_RULES, below=below == "with"))
    fresh.configure(default_verdict="pass")
    for source, retval, rule in STRIDE_PROBES:
        before = fresh.counters()
        assert fresh.run(udp4(source)).retval == retval, source
        moved = delta(before, fresh.counters())
        rules = {key[1] for key in moved if key[0] == "rule"}
        assert rules == ({rule} if rule else set()), source


# ---------------------------------------------------------------- token buckets over simulated time

SEC = 1_000_000_000
T0 = 1000 * SEC


@pytest.fixture
def fresh():
    prog = Filter()
    yield prog
    prog.close()


def test_rate_limit_packets_burst_then_refill(fresh):
    steps = [
        (0, XDP_PASS),
        (0, XDP_PASS),
        (0, XDP_PASS),
        (0, XDP_DROP),
        (SEC // 4, XDP_DROP),
        (SEC // 2, XDP_PASS),
        (SEC // 2, XDP_DROP),
        (SEC, XDP_PASS),
        (10 * SEC, XDP_PASS),
        (10 * SEC, XDP_PASS),
        (10 * SEC, XDP_PASS),
        (10 * SEC, XDP_DROP),
    ]
    got = []
    for offset, _want in steps:
        fresh.configure(default_verdict="pass", rate_pps=2, burst_packets=3, clock_ns=T0 + offset)
        got.append(fresh.run(udp4("192.0.2.150")).retval)
    assert got == [want for _off, want in steps]
    assert fresh.counters()[("reason", "rate_limited")][0] == 4


def test_rate_limit_slow_rate_checked_often_loses_no_fraction(fresh):
    """100 pps, burst 1, a packet every ms for 100 ms: 1 + 10 pass, not fewer."""
    passed = 0
    for ms in range(101):
        fresh.configure(default_verdict="pass", rate_pps=100, burst_packets=1, clock_ns=T0 + ms * 1_000_000)
        passed += fresh.run(udp4("192.0.2.151")).retval == XDP_PASS
    assert passed == 11


def test_rate_limit_bytes_per_second(fresh):
    frame = udp4("192.0.2.152")  # 60 bytes
    assert len(frame) == 60
    steps = [(0, XDP_PASS), (0, XDP_PASS), (0, XDP_DROP), (SEC // 100, XDP_DROP), (3 * SEC // 100, XDP_PASS), (3 * SEC // 100, XDP_DROP)]
    got = []
    for offset, _want in steps:
        fresh.configure(default_verdict="pass", rate_bps=1000, burst_bytes=150, clock_ns=T0 + offset)
        got.append(fresh.run(frame).retval)
    assert got == [want for _off, want in steps]


def test_rate_limit_is_per_source_and_skips_allowed_sources(fresh):
    fresh.fill("filter_v4", fresh.stride_entries({"192.0.2.77": ("pass", 2)}))
    fresh.configure(default_verdict="pass", rate_pps=1, burst_packets=1, clock_ns=T0)
    assert [fresh.run(udp4("192.0.2.160")).retval for _step in range(2)] == [XDP_PASS, XDP_DROP]
    assert [fresh.run(udp4("192.0.2.161")).retval for _step in range(2)] == [XDP_PASS, XDP_DROP]
    assert [fresh.run(udp6("2001:db8::161")).retval for _step in range(2)] == [XDP_PASS, XDP_DROP]
    assert [fresh.run(udp4("192.0.2.77")).retval for _step in range(3)] == [XDP_PASS] * 3


# ---------------------------------------------------------------- end to end on veth


def test_filter_on_veth_drops_and_passes_real_traffic(netns):
    """Namespace A sends real UDP and TCP to B, whose veth runs the filter natively: only what the rules
    allow arrives, the management port stays reachable, and the counters match what was sent."""
    import socket  # pylint: disable=import-outside-toplevel

    from dataplane_lab import attach, drain, entered, udp_socket  # pylint: disable=import-outside-toplevel

    ns_a, ns_b = netns("fa"), netns("fb")
    ns_a.veth("va", "vb", peer_ns=ns_b, addr_a="192.0.2.1/24", addr_b="192.0.2.2/24")
    ns_a.ip("addr", "add", "192.0.2.9/24", "dev", "va")
    prog = Filter()
    link = None
    try:
        prog.configure(default_verdict="drop", malformed="drop")
        prog.fill("filter_ports", prog.port_entries({("udp", 5000): ("pass", 1), ("udp", 5300): ("drop", 2), ("tcp", 80): ("pass", 3)}))
        prog.fill("filter_v4", prog.stride_entries({"192.0.2.9": ("drop", 4)}))
        prog.update("filter_mgmt_v4", lpm("192.0.2.0/24"), struct.pack("<I", 1))
        prog.update("filter_mgmt_ports", struct.pack("<I", 22), struct.pack("<I", 1))
        link = attach(ns_b, prog.prog_fd, "vb", libbpf.ATTACH_XDP)
        vb = [item for item in ns_b.links() if item["ifname"] == "vb"][0]
        assert vb["xdp"]["mode"] == 1  # XDP_ATTACHED_DRV: native, not generic

        rx_ok, rx_dns = udp_socket(ns_b, "192.0.2.2", 5000), udp_socket(ns_b, "192.0.2.2", 5300)
        listeners = {}
        with entered(ns_b):
            for num in (22, 80, 8081):
                srv = socket.socket()
                srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                srv.bind(("192.0.2.2", num))
                srv.listen(4)
                listeners[num] = srv
        with entered(ns_a):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.bind(("192.0.2.1", 0))
            tx_denied = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx_denied.bind(("192.0.2.9", 0))
            for i in range(20):
                tx.sendto(b"ok%d" % i, ("192.0.2.2", 5000))
                tx.sendto(b"dns%d" % i, ("192.0.2.2", 5300))
            for i in range(10):
                tx_denied.sendto(b"denied%d" % i, ("192.0.2.2", 5000))
            reachable = {}
            for num in (22, 80, 8081):
                client = socket.socket()
                client.settimeout(0.5)
                try:
                    client.connect(("192.0.2.2", num))
                    reachable[num] = True
                except OSError:
                    reachable[num] = False
                finally:
                    client.close()
            tx.close()
            tx_denied.close()
        got_ok, got_dns = drain(rx_ok), drain(rx_dns)
        for sock in [rx_ok, rx_dns] + list(listeners.values()):
            sock.close()

        assert sorted(got_ok) == sorted(b"ok%d" % i for i in range(20))
        assert got_dns == []
        assert reachable == {22: True, 80: True, 8081: False}
        rules = {rid: prog.percpu_u64_sums("filter_rule_stats", struct.pack("<I", rid))[0] for rid in (1, 2, 4)}
        assert rules == {1: 20, 2: 20, 4: 10}
        counters = prog.counters()
        assert counters[("reason", "mgmt")][0] >= 2  # SYN and ACK to port 22
        assert counters[("reason", "non_ip")][0] >= 1  # ARP passed
    finally:
        if link is not None:
            os.close(link)
        prog.close()


def test_redirect_rule_returns_xdp_redirect_when_the_devmap_slot_is_set(netns):
    from dataplane_lab import entered  # pylint: disable=import-outside-toplevel

    ns = netns("rd")
    ns.veth("ra", "rb")
    prog = Filter()
    try:
        prog.load_reference_rules()
        prog.configure(**ALLOW)
        with entered(ns):  # a devmap resolves ifindexes in the namespace of the writer
            prog.update("filter_redirect", struct.pack("<I", 1), struct.pack("<I", ns.ifindex("rb")))
        assert prog.run(udp4("203.0.113.9")).retval == XDP_REDIRECT  # source prefix rule -> slot 1
        assert prog.run(tcp4(NOBODY4, 8080)).retval == XDP_PASS  # port rule -> slot 2, empty: fallback
        assert prog.counters()[("verdict", "redirect")][0] == 2
    finally:
        prog.close()
