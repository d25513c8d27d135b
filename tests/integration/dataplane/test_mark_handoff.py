"""The XDP -> TC mark handoff, program by program through BPF_PROG_TEST_RUN (the end-to-end test through a
routed lab host, native and generic XDP, is in test_role_tc_egress.py).

xdp_filter: a passing (or redirected) packet whose rule has a mark comes out with struct fleet_xdp_meta {mark,
magic} in its metadata (the test run returns the frame from data_meta, and xdp_md.data is the metadata's
length); a rule without a mark, a dropped packet and one the management list lets through leave no metadata.
tc_ingress_mark: without metadata (what a test run of a TC program gives) skb->mark stays as it was, counted as
"none"."""

import struct

import pytest
from dataplane_btf import ObjectBtf
from egress_fixture import skb_ctx, skb_field
from filter_fixture import Filter
from harness import paths
from harness.progtest import TC_ACT_OK, XDP_DROP, XDP_PASS, XDP_REDIRECT, LoadedProgram, xdp_md
from packets import raw, tcp4, udp4

pytestmark = pytest.mark.kernel

MAGIC = 0x666C6D6B  # FLEET_XDP_META_MAGIC, checked against the object's BTF-described layout below
# source -> rule (action, rule id, redirect slot, mark)
SOURCES = {
    "192.0.2.10": ("pass", 1, 0, 0x10),
    "192.0.2.11": ("pass", 2, 0, 0),
    "192.0.2.12": ("drop", 3, 0, 0x30),
    "192.0.2.13": ("redirect", 4, 5, 65536),
    "192.0.2.17": ("drop", 5, 0, 0x50),
}
PORTS = {("udp", 5004): ("pass", 6, 0, 0x20)}


@pytest.fixture(scope="module")
def flt():
    prog = Filter()
    prog.configure(default_verdict="pass", malformed="drop")
    prog.fill("filter_v4", prog.stride_entries(SOURCES))
    prog.fill("filter_ports", prog.port_entries(PORTS))
    prog.update("filter_mgmt_v4", bytes(struct.pack("<I", 28)) + bytes([192, 0, 2, 16]), struct.pack("<I", 1))
    prog.update("filter_mgmt_ports", struct.pack("<I", 80), struct.pack("<I", 1))
    yield prog
    prog.close()


# (id, frame, XDP verdict, mark in the metadata or None for no metadata)
CASES = [
    ("source-rule-with-mark", udp4("192.0.2.10"), XDP_PASS, 0x10),
    ("source-rule-without-mark", udp4("192.0.2.11"), XDP_PASS, None),
    ("drop-rule-never-marks", udp4("192.0.2.12"), XDP_DROP, None),
    ("redirect-with-wide-mark", udp4("192.0.2.13"), XDP_PASS, 65536),  # empty slot 5: falls back to pass
    ("mgmt-override-of-a-drop-rule-leaves-no-mark", tcp4("192.0.2.17", 80), XDP_PASS, None),
    ("port-rule-with-mark", udp4("192.0.2.200", 5004), XDP_PASS, 0x20),
    ("no-rule-no-mark", udp4("192.0.2.200", 5005), XDP_PASS, None),
]


@pytest.mark.parametrize("frame, verdict, mark", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_xdp_filter_writes_the_rule_mark_into_the_metadata(flt, frame, verdict, mark):
    data = raw(frame)
    result = flt.run(data, ctx=xdp_md(len(data)))
    assert result.retval in (verdict, XDP_REDIRECT) if verdict == XDP_PASS else result.retval == verdict
    if verdict == XDP_DROP:
        return
    meta_len = struct.unpack_from("<I", result.ctx, 0)[0]  # xdp_md.data after the run: bytes before the frame
    if mark is None:
        assert meta_len == 0 and result.data == data
    else:
        size = flt.btf.size("fleet_xdp_meta")
        assert meta_len == size == 8
        assert flt.btf.unpack("fleet_xdp_meta", result.data[:size]) == {"mark": mark, "magic": MAGIC}
        assert result.data[size:] == data  # the frame itself is untouched


def test_tc_ingress_mark_without_metadata_keeps_the_skb_mark_and_counts_none():
    prog = LoadedProgram(paths.bpf_object("tc_ingress_mark"), "tc_ingress_mark")
    try:
        btf = ObjectBtf(prog.obj.btf_raw())
        outcome = btf.enum("fleet_mark_outcome")
        data = raw(udp4("192.0.2.10"))
        result = prog.run(data, ctx=skb_ctx(mark=7))
        assert result.retval == TC_ACT_OK
        assert skb_field(result.ctx, "mark") == 7
        assert prog.percpu_u64_sums("tc_mark_stats", struct.pack("<I", outcome["none"]))[0] == 1
        assert prog.percpu_u64_sums("tc_mark_stats", struct.pack("<I", outcome["set"]))[0] == 0
    finally:
        prog.close()
