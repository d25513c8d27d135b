"""The BTF reader: every kind, the kernel's own BTF, and clear errors on bad blobs (no kernel objects needed)."""

import os
import struct

import pytest

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import btf


class Builder:
    """A tiny BTF writer for tests: types are appended in order, ids from 1."""

    def __init__(self):
        self.strings = b"\0"
        self.types = b""
        self.count = 0

    def s(self, name):
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(self, name, kind, vlen=0, size_type=0, kflag=0, extra=b""):
        info = (kflag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_type) + extra
        self.count += 1
        return self.count

    def blob(self):
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return hdr + self.types + self.strings


def test_every_kind_is_read_with_its_fields():
    b = Builder()
    u32 = b.add("unsigned int", btf.KIND_INT, size_type=4, extra=struct.pack("<I", 32))
    s8 = b.add("signed char", btf.KIND_INT, size_type=1, extra=struct.pack("<I", (btf.INT_SIGNED << 24) | 8))
    ptr = b.add("", btf.KIND_PTR, size_type=u32)
    arr = b.add("", btf.KIND_ARRAY, extra=struct.pack("<III", s8, u32, 6))
    st = b.add("pair", btf.KIND_STRUCT, vlen=2, size_type=8, extra=struct.pack("<III", b.s("a"), u32, 0) + struct.pack("<III", b.s("b"), u32, 32))
    bf = b.add("bits", btf.KIND_STRUCT, vlen=1, size_type=4, kflag=1, extra=struct.pack("<III", b.s("f"), u32, (3 << 24) | 5))
    un = b.add("u", btf.KIND_UNION, vlen=1, size_type=4, extra=struct.pack("<III", b.s("x"), u32, 0))
    en = b.add("color", btf.KIND_ENUM, vlen=2, size_type=4, kflag=1, extra=struct.pack("<Ii", b.s("C_RED"), -1) + struct.pack("<Ii", b.s("C_BLUE"), 2))
    fwd = b.add("later", btf.KIND_FWD)
    td = b.add("u32_t", btf.KIND_TYPEDEF, size_type=u32)
    vol = b.add("", btf.KIND_VOLATILE, size_type=td)
    const = b.add("", btf.KIND_CONST, size_type=vol)
    rst = b.add("", btf.KIND_RESTRICT, size_type=ptr)
    proto = b.add("", btf.KIND_FUNC_PROTO, vlen=1, size_type=u32, extra=struct.pack("<II", b.s("arg"), u32))
    func = b.add("f", btf.KIND_FUNC, vlen=1, size_type=proto)
    var = b.add("v", btf.KIND_VAR, size_type=u32, extra=struct.pack("<I", 1))
    sec = b.add(".data", btf.KIND_DATASEC, vlen=1, size_type=4, extra=struct.pack("<III", var, 0, 4))
    flt = b.add("double", btf.KIND_FLOAT, size_type=8)
    tag = b.add("tag", btf.KIND_DECL_TAG, size_type=st, extra=struct.pack("<i", 1))
    ttag = b.add("user", btf.KIND_TYPE_TAG, size_type=u32)
    e64 = b.add("big", btf.KIND_ENUM64, vlen=1, size_type=8, extra=struct.pack("<III", b.s("BIG_ONE"), 1, 2))
    parsed = btf.Btf.parse(b.blob())

    assert len(parsed) == e64 + 1
    assert parsed.type(u32).bits == 32 and not parsed.type(u32).signed
    assert parsed.type(s8).signed
    assert parsed.type(ptr).type_id == u32 and parsed.size_of(ptr) == 8
    assert parsed.type(arr).nelems == 6 and parsed.size_of(arr) == 6
    assert [(m.name, m.bit_offset) for m in parsed.type(st).members] == [("a", 0), ("b", 32)]
    assert (parsed.type(bf).members[0].bit_offset, parsed.type(bf).members[0].bitfield_size) == (5, 3)
    assert parsed.type(un).kind_name == "union"
    assert [(m.name, m.value) for m in parsed.type(en).members] == [("C_RED", -1), ("C_BLUE", 2)]
    assert parsed.type(fwd).kind == btf.KIND_FWD
    assert parsed.resolve(const) == u32 and parsed.skip_qualifiers(const) == td
    assert parsed.type(rst).type_id == ptr
    assert parsed.type(proto).members[0].name == "arg" and parsed.type(func).linkage == 1
    assert parsed.type(var).linkage == 1
    assert parsed.type(sec).members[0].type_id == var and parsed.type(sec).members[0].size == 4
    assert parsed.type(flt).size == 8
    assert parsed.type(tag).component_idx == 1
    assert parsed.resolve(ttag) == u32
    assert parsed.type(e64).members[0].value == (2 << 32) | 1
    assert parsed.find("pair").id == st and parsed.find("nothing") is None
    assert parsed.describe(arr) == "signed char[6]" and parsed.describe(st) == "struct pair"


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="no kernel BTF")
def test_the_kernels_own_btf_parses_completely():
    with open("/sys/kernel/btf/vmlinux", "rb") as handle:
        parsed = btf.Btf.parse(handle.read())
    iphdr = parsed.find("iphdr", btf.KIND_STRUCT)
    assert iphdr.size == 20
    assert parsed.size_of(parsed.find("ethhdr", btf.KIND_STRUCT).id) == 14
    kinds = {t.kind for t in parsed.types}
    assert {btf.KIND_INT, btf.KIND_STRUCT, btf.KIND_FUNC, btf.KIND_FUNC_PROTO, btf.KIND_ENUM} <= kinds


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"\x01\x02", "too short"),
        (struct.pack("<HBBIIIII", 0x1234, 1, 0, 24, 0, 0, 0, 1) + b"\0", "not BTF: magic 0x1234"),
        (struct.pack("<HBBIIIII", 0xEB9F, 2, 0, 24, 0, 0, 0, 1) + b"\0", "version 2"),
        (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 100, 0, 1) + b"\0", "past the end"),
        (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 8, 8, 1) + b"\0" * 9, "truncated"),
    ],
)
def test_bad_blobs_fail_with_the_reason(blob, message):
    with pytest.raises(btf.BtfError) as err:
        btf.Btf.parse(blob)
    assert message in str(err.value)


def test_unknown_type_id_names_the_id():
    parsed = btf.Btf.parse(Builder().blob())
    with pytest.raises(btf.BtfError, match="type id 7 does not exist"):
        parsed.type(7)
