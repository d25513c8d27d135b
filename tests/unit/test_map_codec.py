"""Keys and values between the operator's notation and bytes, through the BTF of a real compiled object.

The fixture object tests/bpf/map_types.c is compiled here with clang and only
opened (not loaded), so these tests need no BPF privileges.
"""

import shutil

import pytest
from harness.bpfbuild import compile_fixture

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_codec
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import CodecError

NCPUS = 2


@pytest.fixture(scope="module")
def codecs():
    if not shutil.which("clang"):
        pytest.skip("clang is needed to compile the fixture")
    obj_path = compile_fixture("map_types")
    out = {}
    with libbpf.BpfObject.open(obj_path) as obj:
        raw = obj.btf_raw()
        for m in obj.maps():
            info = m.layout()
            info["btf_key_type_id"] = libbpf.lib().bpf_map__btf_key_type_id(m._ptr)
            info["btf_value_type_id"] = libbpf.lib().bpf_map__btf_value_type_id(m._ptr)
            out[m.name] = map_codec.MapCodec.build(info, raw, ncpus=NCPUS)
    return out


def roundtrip_key(codec, notation):
    return codec.decode_key(codec.encode_key(notation))


def roundtrip_value(codec, notation, per_cpu="sum"):
    return codec.decode_value(codec.encode_value(notation), per_cpu)


def test_struct_key_with_address_port_and_integer(codecs):
    c = codecs["vips"]
    key = {"vip": "192.0.2.10", "port": 443, "proto": 6}
    data = c.encode_key(key)
    assert data == bytes([192, 0, 2, 10, 0x01, 0xBB, 6, 0])
    assert c.decode_key(data) == dict(key, pad=0)


def test_struct_value_with_every_member_notation(codecs):
    c = codecs["vips"]
    value = {
        "addr6": "2001:db8::1",
        "mac": "02:00:00:00:00:01",
        "weight": 65535,
        "delta": -5,
        "name": "web-1",
        "enabled": True,
        "verdict": "DROP",
        "flags": ["log", "TCP"],
        "mark": 0x01020304,
        "ports": [80, 443],
        "tiny": -128,
    }
    data = c.encode_value(value)
    assert len(data) == c.value_size
    back = c.decode_value(data)
    assert back["addr6"] == "2001:db8::1" and back["mac"] == "02:00:00:00:00:01"
    assert back["weight"] == 65535 and back["delta"] == -5 and back["tiny"] == -128
    assert back["name"] == "web-1" and back["enabled"] is True
    assert back["verdict"] == "drop" and back["flags"] == ["log", "tcp"]
    assert back["mark"] == 0x01020304 and back["ports"] == [80, 443, 0]
    assert back["pad"] == [0, 0, 0]
    # __be32 is stored in network order
    mark_at = data.index(bytes([1, 2, 3, 4]))
    assert mark_at > 0
    # missing members are zero
    assert c.decode_value(c.encode_value({"weight": 1}))["addr6"] == "::"


def test_lpm_keys_are_cidrs_in_the_kernels_layout(codecs):
    v4, v6 = codecs["prefixes_v4"], codecs["prefixes_v6"]
    assert v4.encode_key("192.0.2.0/24") == bytes([24, 0, 0, 0, 192, 0, 2, 0])
    assert roundtrip_key(v4, "192.0.2.1") == "192.0.2.1/32"
    assert roundtrip_key(v4, "0.0.0.0/0") == "0.0.0.0/0"
    assert roundtrip_key(v6, "2001:db8::/32") == "2001:db8::/32"
    assert roundtrip_key(v4, {"prefixlen": 24, "addr": "198.51.100.0"}) == "198.51.100.0/24"


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("192.0.2.1/24", "host bits set: expected the network address, 192.0.2.0/24"),
        ("192.0.2.0/33", "prefix length '33' is not 0..32"),
        ("192.0.2/24", "bad address"),
        ("nonsense", "bad address"),
        (42, "expected a IPv4 CIDR"),
    ],
)
def test_bad_cidrs_fail_with_the_reason(codecs, bad, reason):
    with pytest.raises(CodecError) as err:
        codecs["prefixes_v4"].encode_key(bad, "entries[3].key")
    assert reason in str(err.value) and "entries[3].key" in str(err.value)


def test_enums_by_short_or_full_name_or_number(codecs):
    c = codecs["policy"]
    for notation in ("drop", "Drop", "FLEET_VERDICT_DROP", 1):
        assert roundtrip_value(c, notation) == "drop"
    assert roundtrip_value(c, 7) == 7
    with pytest.raises(CodecError, match="expected one of pass, drop, redirect"):
        c.encode_value("reject")


def test_flags_enum_takes_a_list_or_one_name(codecs):
    c = codecs["prefixes_v6"]
    assert roundtrip_value(c, ["log", "count"]) == ["log", "count"]
    assert roundtrip_value(c, "tcp") == ["tcp"]
    assert roundtrip_value(c, []) == []
    assert roundtrip_value(c, 9) == ["log", 8]


def test_scalar_keys_and_values(codecs):
    assert roundtrip_key(codecs["deny_v4"], "198.51.100.7") == "198.51.100.7"
    assert codecs["deny_v4"].encode_key("198.51.100.7") == bytes([198, 51, 100, 7])
    assert roundtrip_key(codecs["flows"], "2001:db8::7") == "2001:db8::7"
    assert roundtrip_value(codecs["flows"], 2**64 - 1) == 2**64 - 1
    assert roundtrip_value(codecs["macs"], "aa:bb:cc:dd:ee:ff") == "aa:bb:cc:dd:ee:ff"
    assert roundtrip_key(codecs["policy"], "3") == 3  # JSON dict keys arrive as strings
    assert codecs["port_hits"].encode_key(443) == b"\x01\xbb"


@pytest.mark.parametrize(
    "map_name, value, reason",
    [
        ("flows", 2**64, "out of range for unsigned long long (0..18446744073709551615)"),
        ("flows", -1, "out of range"),
        ("flows", "many", "expected an integer"),
        ("vips", {"weight": 70000}, "weight: 70000 is out of range"),
        ("vips", {"tiny": 128}, "tiny: 128 is out of range for signed char (-128..127)"),
        ("vips", {"wieght": 1}, "unknown member 'wieght' of struct backend: valid members are addr6, mac, weight"),
        ("vips", {"name": "x" * 9}, "at most 8 fit"),
        ("vips", {"ports": [1, 2, 3, 4]}, "4 items given; the array holds 3"),
        ("vips", {"mac": "02:00:00:00:00"}, "not a MAC address"),
        ("vips", {"addr6": "2001:db8::g"}, "not an IPv6 address"),
        ("vips", {"enabled": "maybe"}, "expected true or false"),
        ("macs", "0x0102", "is 2 bytes; expected 6 bytes (12 hex digits)"),
    ],
)
def test_bad_values_fail_naming_where_and_why(codecs, map_name, value, reason):
    with pytest.raises(CodecError) as err:
        codecs[map_name].encode_value(value, "entries[0].value")
    assert reason in str(err.value)
    assert str(err.value).startswith("entries[0].value")


def test_raw_hex_escape_hatch_for_whole_keys_values_and_members(codecs):
    c = codecs["deny_v4"]
    assert c.encode_key("0xc0000201") == bytes([192, 0, 2, 1])
    assert c.encode_key({"hex": "c0000202"}) == bytes([192, 0, 2, 2])
    assert c.encode_value("0x01000000") == bytes([1, 0, 0, 0])
    value = codecs["vips"].encode_value({"mac": {"hex": "020000000001"}})
    assert codecs["vips"].decode_value(value)["mac"] == "02:00:00:00:00:01"
    with pytest.raises(CodecError, match="expected 4 bytes"):
        c.encode_key("0xc000020001")


def test_maps_without_btf_take_and_give_hex():
    info = {"type": "hash", "key_size": 3, "value_size": 2, "max_entries": 4}
    c = map_codec.MapCodec.build(info)
    assert c.decode_key(c.encode_key("0xaabbcc")) == "0xaabbcc"
    assert c.decode_value(c.encode_value({"hex": "0102"})) == "0x0102"
    with pytest.raises(CodecError, match="expected raw bytes as a hex string of 3 bytes"):
        c.encode_key({"a": 1})


def test_per_cpu_values_one_for_all_or_a_list_and_reads_sum_or_list(codecs):
    c = codecs["counters"]
    data = c.encode_value({"packets": 5, "bytes": 100})
    assert len(data) == 16 * NCPUS
    assert c.decode_value(data) == {"packets": 10, "bytes": 200}
    assert c.decode_value(data, "list") == [{"packets": 5, "bytes": 100}] * NCPUS
    data = c.encode_value({"per_cpu": [{"packets": 1}, {"packets": 2}]})
    assert c.decode_value(data) == {"packets": 3, "bytes": 0}
    hits = codecs["port_hits"]
    assert hits.value_buf_size == 8 * NCPUS
    assert roundtrip_value(hits, [4, 5], "list") == [4, 5]
    assert roundtrip_value(hits, 4) == 8
    with pytest.raises(CodecError, match="3 per-CPU values given; this host has 2 possible CPUs"):
        hits.encode_value([1, 2, 3])


def test_null_value_is_all_zero(codecs):
    assert codecs["vips"].encode_value(None) == b"\0" * codecs["vips"].value_size


def test_single_member_struct_takes_a_scalar(codecs):
    # fleet_ipv6_t is a struct of one array: it has its own notation, but plain structs work the same
    c = codecs["vips"]
    assert c.decode_value(c.encode_value({"addr6": "::1"}))["addr6"] == "::1"


# ---------------------------------------------------------------- enum end markers


def _program_enums():
    """{enum name: EnumCodec} of the collection's three programs (bpf/include/fleet/*.h), from their BTF."""
    from harness import paths

    from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import btf as btf_mod

    out = {}
    for name in ("xdp_filter", "xdp_lb", "tc_egress"):
        try:
            path = paths.bpf_object(name)
        except FileNotFoundError:
            pytest.skip("run `make bpf` first")
        with libbpf.BpfObject.open(path) as obj:
            parsed = btf_mod.Btf.parse(obj.btf_raw())
        for item in parsed.types:
            if item.kind in (btf_mod.KIND_ENUM, btf_mod.KIND_ENUM64) and item.name:
                out[item.name] = item
    return out


def test_end_markers_of_the_programs_enums_are_exactly_the_max_and_count_enumerators():
    enums = _program_enums()
    markers = {name: map_codec.end_marker(item.members, name) for name, item in enums.items()}
    assert {name: m.name for name, m in markers.items() if m} == {
        "fleet_verdict": "FLEET_VERDICT_MAX",
        "fleet_filter_reason": "FLEET_FILTER_REASON_MAX",
        "fleet_lb_stat": "FLEET_LB_STAT_MAX",
        "fleet_egress_outcome": "FLEET_EGRESS_OUTCOMES",
    }
    # every other enum of the three programs keeps all its values
    assert {"fleet_policy", "fleet_proto", "fleet_lb_family", "fleet_lb_mode", "fleet_egress_limit"} <= set(enums)


@pytest.mark.parametrize("value", ["max", "MAX", "FLEET_VERDICT_MAX", 3, "3", 7])
def test_enum_end_marker_is_not_a_value(value):
    item = _program_enums()["fleet_verdict"]
    codec = map_codec.EnumCodec(4, False, item.members, "fleet_verdict")
    with pytest.raises(CodecError, match="end marker of enum fleet_verdict .FLEET_VERDICT_MAX = 3.*pass, drop, redirect"):
        codec.encode(value, "entries[0].value.default_verdict")
    assert codec.encode("redirect", "") == (2).to_bytes(4, "little")
    assert codec.decode((3).to_bytes(4, "little")) == 3  # read back as the number, never as "max"
    assert "max" not in codec.names()


def test_a_last_enumerator_that_is_a_value_is_not_an_end_marker():
    item = _program_enums()["fleet_lb_family"]  # NONE, IPV4, IPV6: ipv6 is a value
    assert map_codec.end_marker(item.members, "fleet_lb_family") is None


# ---------------------------------------------------------------- short messages, per-CPU sums


def test_error_messages_never_carry_a_whole_value(codecs):
    huge = "x" * 1_000_000
    nested = [[[[[[list(range(100000))]]]]]]
    for codec, value in ((codecs["deny_v4"], huge), (codecs["vips"], {"vip": huge}), (codecs["vips"], nested)):
        with pytest.raises(CodecError) as err:
            codec.encode_key(value, "entries[0]")
        assert len(str(err.value)) < 600, str(err.value)[:1000]


def test_per_cpu_sum_adds_only_counters():
    from harness import paths

    from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import btf as btf_mod

    with libbpf.BpfObject.open(paths.bpf_object("xdp_lb")) as obj:
        raw = obj.btf_raw()
        parsed = btf_mod.Btf.parse(raw)
        conn = map_codec.compile_type(parsed, btf_mod.map_definition(parsed, "lb_conntrack_v4")["btf_value_type_id"])
        counter = map_codec.compile_type(parsed, btf_mod.map_definition(parsed, "lb_stats")["btf_value_type_id"])
    # a connection-table entry written on CPU 1 only: the backend id is not added up over CPUs
    per_cpu = [{"backend": 0, "pad": 0, "last_seen_ns": 0}, {"backend": 5, "pad": 0, "last_seen_ns": 77}]
    assert map_codec.summarize(conn, per_cpu) == {"backend": [0, 5], "pad": 0, "last_seen_ns": [0, 77]}
    same = [{"backend": 5, "pad": 0, "last_seen_ns": 9}] * 3
    assert map_codec.summarize(conn, same) == {"backend": 5, "pad": 0, "last_seen_ns": 9}
    assert map_codec.summarize(counter, [{"packets": 1, "bytes": 60}, {"packets": 2, "bytes": 120}]) == {"packets": 3, "bytes": 180}
    assert map_codec.summarize(map_codec.IntCodec(4, False), [1, 2, 3]) == 6


def test_array_index_beyond_max_entries_is_refused(codecs):
    policy = codecs["policy"]  # an array of 8
    assert policy.encode_key(7) == (7).to_bytes(4, "little")
    with pytest.raises(CodecError, match=r"entries\[8\]: index 8 is out of range: the array map has 8 elements \(0..7\)"):
        policy.encode_key(8, "entries[8]")
    with pytest.raises(CodecError, match="list line 2: index 9 is out of range"):
        policy.encode_keys(["1", "9"], lambda i: "list line %d" % (i + 1))


def _program_map_codec(obj_name, map_name):
    from harness import paths

    from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import btf as btf_mod

    with libbpf.BpfObject.open(paths.bpf_object(obj_name)) as obj:
        raw = obj.btf_raw()
    info = btf_mod.map_definition(btf_mod.Btf.parse(raw), map_name, libbpf.MAP_TYPE_NAMES)
    return map_codec.MapCodec.build(info, raw, ncpus=NCPUS)


def test_counter_keys_made_of_enums_read_back_by_name():
    stats = _program_map_codec("xdp_filter", "filter_stats")
    verdicts = _program_enums()["fleet_verdict"]
    width = map_codec.end_marker(verdicts.members, "fleet_verdict").value  # the program's reason * MAX + verdict
    reasons = map_codec.EnumCodec(4, False, _program_enums()["fleet_filter_reason"].members, "fleet_filter_reason")
    port = reasons.lookup["port"]
    key = (port * width + 1).to_bytes(4, "little")
    assert stats.decode_key(key) == {"reason": "port", "verdict": "drop"}
    assert stats.encode_key({"reason": "port", "verdict": "drop"}) == key
    assert stats.encode_key(port * width + 1) == key  # the number still works
    with pytest.raises(CodecError, match="verdict: 'max' is the end marker"):
        stats.encode_key({"reason": "port", "verdict": "max"}, "entries[0]")
    egress = _program_map_codec("tc_egress", "egress_stats")
    assert egress.decode_key((2 * 8 + 3).to_bytes(4, "little")) == {"class_id": 2, "outcome": "paced"}
    assert egress.decode_key((2 * 8 + 6).to_bytes(4, "little")) == {"class_id": 2, "outcome": 6}
    assert _program_map_codec("xdp_filter", "filter_rule_stats").decode_key((7).to_bytes(4, "little")) == 7
