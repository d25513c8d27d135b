# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Just enough BTF to find a variable in a data section (``.rodata``).

The loader sets ``volatile const`` variables (``fleet_chain_slot``) before
load; their offset inside the section is in the object's BTF: a DATASEC type
named after the section lists (VAR type id, offset, size). This reader walks
the type section to resolve those ids; it does not interpret anything else.
"""

from __future__ import annotations

import struct

BTF_MAGIC = 0xEB9F

# kind -> size of the data that follows the 12-byte btf_type (per vlen entry when a tuple)
_KIND_EXTRA = {
    1: 4,        # INT
    2: 0,        # PTR
    3: 12,       # ARRAY
    4: (12,),    # STRUCT
    5: (12,),    # UNION
    6: (8,),     # ENUM
    7: 0,        # FWD
    8: 0,        # TYPEDEF
    9: 0,        # VOLATILE
    10: 0,       # CONST
    11: 0,       # RESTRICT
    12: 0,       # FUNC
    13: (8,),    # FUNC_PROTO
    14: 4,       # VAR
    15: (12,),   # DATASEC
    16: 0,       # FLOAT
    17: 4,       # DECL_TAG
    18: 0,       # TYPE_TAG
    19: (12,),   # ENUM64
}
KIND_VAR = 14
KIND_DATASEC = 15


class BtfFormatError(ValueError):
    pass


def _types(raw: bytes):
    """Yield (type_id, kind, name, size_or_type, payload bytes) for every type."""
    if len(raw) < 24:
        raise BtfFormatError("BTF blob too short (%d bytes)" % len(raw))
    magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", raw, 0)
    if magic != BTF_MAGIC:
        raise BtfFormatError("not BTF (magic %#x)" % magic)
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", raw, 8)
    types = raw[hdr_len + type_off:hdr_len + type_off + type_len]
    strings = raw[hdr_len + str_off:hdr_len + str_off + str_len]

    def name_at(off: int) -> str:
        end = strings.find(b"\0", off)
        return strings[off:end if end >= 0 else len(strings)].decode(errors="replace")

    pos, type_id = 0, 1
    while pos + 12 <= len(types):
        name_off, info, size_or_type = struct.unpack_from("<III", types, pos)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        extra = _KIND_EXTRA.get(kind)
        if extra is None:
            raise BtfFormatError("unknown BTF kind %d at type %d" % (kind, type_id))
        size = extra[0] * vlen if isinstance(extra, tuple) else extra
        yield type_id, kind, name_at(name_off), size_or_type, types[pos + 12:pos + 12 + size]
        pos += 12 + size
        type_id += 1


def datasec_vars(raw: bytes, section: str = ".rodata") -> dict:
    """{variable name: (offset, size)} for the variables of one data section."""
    var_names = {}
    sections = []
    for type_id, kind, name, _size, payload in _types(raw):
        if kind == KIND_VAR:
            var_names[type_id] = name
        elif kind == KIND_DATASEC and name == section:
            sections.append(payload)
    result = {}
    for payload in sections:
        for pos in range(0, len(payload), 12):
            var_type, offset, size = struct.unpack_from("<III", payload, pos)
            if var_type in var_names:
                result[var_names[var_type]] = (offset, size)
    return result


def var_offset(raw: bytes, var: str, section: str = ".rodata"):
    """(offset, size) of var in section, or None when the object does not declare it."""
    return datasec_vars(raw, section).get(var)
