# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A reader of BTF blobs (the kernel's type information), in pure Python.

The blob comes from ``libbpf.btf_raw(btf_id)`` (a loaded map's BTF) or from
``BpfObject.btf_raw()`` (an ELF object). The format is the one described in
the kernel's Documentation/bpf/btf.rst: a header, a section of type records,
and a string section. Only reading is supported; nothing here writes BTF.

    btf = Btf.parse(raw)
    t = btf.type(type_id)          # a BtfType record
    btf.resolve(type_id)           # the id behind typedefs and qualifiers
    btf.size_of(type_id)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError

BTF_MAGIC = 0xEB9F

KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

KIND_NAMES = {
    0: "void",
    KIND_INT: "int",
    KIND_PTR: "ptr",
    KIND_ARRAY: "array",
    KIND_STRUCT: "struct",
    KIND_UNION: "union",
    KIND_ENUM: "enum",
    KIND_FWD: "fwd",
    KIND_TYPEDEF: "typedef",
    KIND_VOLATILE: "volatile",
    KIND_CONST: "const",
    KIND_RESTRICT: "restrict",
    KIND_FUNC: "func",
    KIND_FUNC_PROTO: "func_proto",
    KIND_VAR: "var",
    KIND_DATASEC: "datasec",
    KIND_FLOAT: "float",
    KIND_DECL_TAG: "decl_tag",
    KIND_TYPE_TAG: "type_tag",
    KIND_ENUM64: "enum64",
}

# INT encoding bits
INT_SIGNED = 1
INT_CHAR = 2
INT_BOOL = 4

QUALIFIERS = frozenset({KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG})

_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_3U32 = struct.Struct("<III")
_2U32 = struct.Struct("<II")
_ENUM = struct.Struct("<Ii")


class BtfError(FleetError, ValueError):
    """A blob that is not valid BTF, or a type id that does not exist."""


@dataclass
class Member:
    """A struct/union member, an enum value, a function parameter or a datasec variable."""

    name: str
    type_id: int = 0
    bit_offset: int = 0
    bitfield_size: int = 0
    value: int = 0
    size: int = 0


@dataclass
class BtfType:
    """One type record. Fields that do not apply to a kind stay at their defaults."""

    id: int
    kind: int
    name: str
    size: int = 0
    type_id: int = 0
    kind_flag: bool = False
    vlen: int = 0
    # INT
    encoding: int = 0
    int_offset: int = 0
    bits: int = 0
    # ARRAY
    index_type_id: int = 0
    nelems: int = 0
    # STRUCT / UNION / ENUM / ENUM64 / FUNC_PROTO / DATASEC
    members: list = field(default_factory=list)
    # VAR linkage, FUNC linkage (vlen), DECL_TAG component index
    linkage: int = 0
    component_idx: int = -1

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, "kind%d" % self.kind)

    @property
    def signed(self) -> bool:
        if self.kind == KIND_INT:
            return bool(self.encoding & INT_SIGNED)
        if self.kind in (KIND_ENUM, KIND_ENUM64):
            return self.kind_flag
        return False


VOID = BtfType(id=0, kind=0, name="void")


class Btf:
    """The types of one BTF blob, indexed by id (id 0 is void)."""

    def __init__(self, types: list, strings: bytes):
        self.types = types
        self._strings = strings
        self._by_name = None

    @classmethod
    def parse(cls, raw: bytes) -> Btf:
        if len(raw) < _HEADER.size:
            raise BtfError("BTF blob too short: %d bytes" % len(raw))
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(raw, 0)
        if magic != BTF_MAGIC:
            if magic == 0x9FEB:
                raise BtfError("big-endian BTF is not supported")
            raise BtfError("not BTF: magic 0x%04x, expected 0x%04x" % (magic, BTF_MAGIC))
        if version != 1:
            raise BtfError("BTF version %d is not supported (expected 1)" % version)
        base = hdr_len
        if base + type_off + type_len > len(raw) or base + str_off + str_len > len(raw):
            raise BtfError("BTF sections run past the end of the blob")
        strings = raw[base + str_off : base + str_off + str_len]
        types = [VOID]
        data = raw[base + type_off : base + type_off + type_len]
        reader = _Reader(data, strings)
        while reader.pos < len(data):
            types.append(reader.read_type(len(types)))
        return cls(types, strings)

    def string(self, offset: int) -> str:
        return _string(self._strings, offset)

    def __len__(self) -> int:
        return len(self.types)

    def type(self, type_id: int) -> BtfType:
        try:
            return self.types[type_id]
        except IndexError:
            raise BtfError("BTF type id %d does not exist (the blob has %d types)" % (type_id, len(self.types) - 1))

    def find(self, name: str, kind: int = 0):
        """The first type called name (of kind, when given), or None."""
        if self._by_name is None:
            self._by_name = {}
            for item in self.types[1:]:
                if item.name:
                    self._by_name.setdefault(item.name, []).append(item)
        for item in self._by_name.get(name, []):
            if not kind or item.kind == kind:
                return item
        return None

    def skip_qualifiers(self, type_id: int) -> int:
        """Follow const/volatile/restrict/type_tag (not typedefs)."""
        seen = 0
        while True:
            item = self.type(type_id)
            if item.kind not in QUALIFIERS:
                return type_id
            type_id = item.type_id
            seen += 1
            if seen > 64:
                raise BtfError("qualifier loop at type %d" % type_id)

    def resolve(self, type_id: int) -> int:
        """Follow typedefs and qualifiers to the underlying type."""
        seen = 0
        while True:
            item = self.type(type_id)
            if item.kind not in QUALIFIERS and item.kind != KIND_TYPEDEF:
                return type_id
            type_id = item.type_id
            seen += 1
            if seen > 64:
                raise BtfError("typedef loop at type %d" % type_id)

    def size_of(self, type_id: int) -> int:
        item = self.type(self.resolve(type_id))
        if item.kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT, KIND_DATASEC):
            return item.size
        if item.kind == KIND_PTR:
            return 8
        if item.kind == KIND_ARRAY:
            return item.nelems * self.size_of(item.type_id)
        raise BtfError("type %d (%s) has no size" % (item.id, item.kind_name))

    def datasec_vars(self, section: str) -> dict:
        """{variable name: (byte offset, size)} of a data section such as ".rodata"."""
        result = {}
        for item in self.types:
            if item.kind == KIND_DATASEC and item.name == section:
                for member in item.members:
                    var = self.type(member.type_id)
                    result[var.name] = (member.bit_offset // 8, member.size)
        return result

    def describe(self, type_id: int) -> str:
        """A C-like name: 'struct fleet_lpm_v4', '__u32', 'unsigned char[6]'."""
        item = self.type(type_id)
        if item.kind == 0:
            return "void"
        if item.kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64):
            word = {KIND_STRUCT: "struct", KIND_UNION: "union"}.get(item.kind, "enum")
            return "%s %s" % (word, item.name or "(anon)")
        if item.kind == KIND_ARRAY:
            return "%s[%d]" % (self.describe(item.type_id), item.nelems)
        if item.kind == KIND_PTR:
            return "%s *" % self.describe(item.type_id)
        if item.kind in QUALIFIERS:
            return "%s %s" % (item.kind_name, self.describe(item.type_id))
        return item.name or item.kind_name


def map_definition(btf: Btf, name: str, map_type_names: dict = None) -> dict:
    """A map's definition in an object's BTF (the variable name in section .maps, declared with
    __uint/__type/__array): {type, key_size, value_size, max_entries, map_flags, btf_key_type_id,
    btf_value_type_id, inner} in the shape of libbpf.map_info; inner is the definition of a map of maps'
    inner map (or None). type is a number unless map_type_names maps it to a name. KeyError when absent."""
    for item in btf.types:
        if item.kind != KIND_DATASEC or item.name != ".maps":
            continue
        for member in item.members:
            var = btf.type(member.type_id)
            if var.kind == KIND_VAR and var.name == name:
                return _map_struct(btf, btf.resolve(var.type_id), name, map_type_names)
    raise KeyError(name)


def _map_struct(btf: Btf, struct_id: int, name: str, map_type_names: dict = None) -> dict:
    item = btf.type(struct_id)
    if item.kind != KIND_STRUCT:
        raise BtfError("map %s: its definition is a %s, not a struct" % (name, item.kind_name))
    out = {
        "name": name,
        "type": 0,
        "key_size": 0,
        "value_size": 0,
        "max_entries": 0,
        "map_flags": 0,
        "btf_key_type_id": 0,
        "btf_value_type_id": 0,
        "inner": None,
    }
    for member in item.members:
        ptr = btf.type(btf.skip_qualifiers(member.type_id))
        if member.name in ("type", "max_entries", "map_flags", "key_size", "value_size") and ptr.kind == KIND_PTR:
            target = btf.type(btf.skip_qualifiers(ptr.type_id))
            if target.kind == KIND_ARRAY:
                out[member.name] = target.nelems
        elif member.name in ("key", "value") and ptr.kind == KIND_PTR:
            out["btf_%s_type_id" % member.name] = ptr.type_id
            out["%s_size" % member.name] = btf.size_of(ptr.type_id)
        elif member.name == "values" and ptr.kind == KIND_ARRAY:
            inner = btf.type(btf.skip_qualifiers(ptr.type_id))
            if inner.kind == KIND_PTR:
                out["inner"] = _map_struct(btf, btf.resolve(inner.type_id), name + ".inner", map_type_names)
    if map_type_names is not None:
        out["type"] = map_type_names.get(out["type"], "unknown")
    return out


def _string(strings: bytes, offset: int) -> str:
    if offset >= len(strings):
        raise BtfError("string offset %d past the string section (%d bytes)" % (offset, len(strings)))
    end = strings.find(b"\0", offset)
    if end < 0:
        end = len(strings)
    return strings[offset:end].decode("utf-8", errors="replace")


class _Reader:
    def __init__(self, data: bytes, strings: bytes):
        self.data = data
        self.strings = strings
        self.pos = 0

    def _take(self, fmt: struct.Struct):
        if self.pos + fmt.size > len(self.data):
            raise BtfError("type section truncated at byte %d" % self.pos)
        out = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return out

    def read_type(self, type_id: int) -> BtfType:
        name_off, info, size_type = self._take(_TYPE)
        vlen = info & 0xFFFF
        kind = (info >> 24) & 0x1F
        kind_flag = bool(info >> 31)
        name = _string(self.strings, name_off)
        item = BtfType(id=type_id, kind=kind, name=name, kind_flag=kind_flag, vlen=vlen)
        if kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT, KIND_DATASEC):
            item.size = size_type
        else:
            item.type_id = size_type
        if kind == KIND_INT:
            (word,) = self._take(_U32)
            item.encoding = (word >> 24) & 0x0F
            item.int_offset = (word >> 16) & 0xFF
            item.bits = word & 0xFF
        elif kind == KIND_ARRAY:
            item.type_id, item.index_type_id, item.nelems = self._take(_3U32)
        elif kind in (KIND_STRUCT, KIND_UNION):
            for _idx in range(vlen):
                m_name, m_type, m_off = self._take(_3U32)
                if kind_flag:
                    bit_offset, bitfield = m_off & 0xFFFFFF, m_off >> 24
                else:
                    bit_offset, bitfield = m_off, 0
                item.members.append(Member(_string(self.strings, m_name), m_type, bit_offset, bitfield))
        elif kind == KIND_ENUM:
            for _idx in range(vlen):
                m_name, val = self._take(_ENUM)
                if not kind_flag:
                    val &= 0xFFFFFFFF
                item.members.append(Member(_string(self.strings, m_name), value=val))
        elif kind == KIND_ENUM64:
            for _idx in range(vlen):
                m_name, lo, hi = self._take(_3U32)
                val = (hi << 32) | lo
                if kind_flag and val >= 1 << 63:
                    val -= 1 << 64
                item.members.append(Member(_string(self.strings, m_name), value=val))
        elif kind == KIND_FUNC_PROTO:
            for _idx in range(vlen):
                m_name, m_type = self._take(_2U32)
                item.members.append(Member(_string(self.strings, m_name), m_type))
        elif kind == KIND_FUNC:
            item.linkage = vlen
        elif kind == KIND_VAR:
            (item.linkage,) = self._take(_U32)
        elif kind == KIND_DATASEC:
            for _idx in range(vlen):
                v_type, v_off, v_size = self._take(_3U32)
                item.members.append(Member("", v_type, v_off * 8, size=v_size))
        elif kind == KIND_DECL_TAG:
            (item.component_idx,) = self._take(_I32)
        elif kind in (KIND_PTR, KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FLOAT, KIND_TYPE_TAG):
            pass
        else:
            raise BtfError("unknown BTF kind %d at type %d" % (kind, type_id))
        return item
