"""Pack and unpack map keys and values of the data-plane programs by their BTF.

The tests and the benchmark never copy a struct layout or a constant from the
C headers: they read the object's BTF (struct member offsets, enum values)
and pack by member name.

    btf = ObjectBtf(obj.btf_raw())
    btf.pack("fleet_filter_config", default_verdict="drop", mgmt_ports=[22])
    btf.enum("fleet_filter_reason")["port"]  -> 3
"""

import ipaddress
import socket
import struct

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
_EXTRA = {1: lambda v: 4, 3: lambda v: 12, 4: lambda v: 12 * v, 5: lambda v: 12 * v, 6: lambda v: 8 * v,
          13: lambda v: 8 * v, 14: lambda v: 4, 15: lambda v: 12 * v, 17: lambda v: 4, 19: lambda v: 12 * v}


class ObjectBtf:
    """Types of one BPF object, by name."""

    def __init__(self, raw: bytes):
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from("<HBBIIIII", raw)
        assert magic == 0xEB9F, "not BTF"
        strings = raw[hdr_len + str_off:]
        self.types = [None]
        self.by_name = {}
        pos, stop = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < stop:
            name_off, info, size_type = struct.unpack_from("<III", raw, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            name = strings[name_off:strings.index(b"\0", name_off)].decode()
            body = pos + 12
            entry = {"kind": kind, "name": name, "size": size_type, "type": size_type}
            if kind == KIND_ARRAY:
                entry["elem"], _idx, entry["nelems"] = struct.unpack_from("<III", raw, body)
            elif kind in (KIND_STRUCT, KIND_UNION):
                members = []
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", raw, body + 12 * i)
                    bitfield = bool(info >> 31)
                    members.append((strings[m_name:strings.index(b"\0", m_name)].decode(), m_type,
                                    (m_off & 0xFFFFFF) // 8 if bitfield else m_off // 8))
                entry["members"] = members
            elif kind == KIND_ENUM:
                values = {}
                for i in range(vlen):
                    e_name, e_val = struct.unpack_from("<Ii", raw, body + 8 * i)
                    values[strings[e_name:strings.index(b"\0", e_name)].decode()] = e_val
                entry["values"] = values
            self.types.append(entry)
            if name:
                self.by_name.setdefault((kind, name), len(self.types) - 1)
            pos = body + _EXTRA.get(kind, lambda v: 0)(vlen)

    def _find(self, name: str) -> int:
        for kind in (KIND_STRUCT, KIND_TYPEDEF, KIND_ENUM, KIND_UNION):
            if (kind, name) in self.by_name:
                return self.by_name[(kind, name)]
        raise KeyError(name)

    def _resolve(self, tid: int) -> int:
        while self.types[tid]["kind"] in (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT):
            tid = self.types[tid]["type"]
        return tid

    def size(self, tid) -> int:
        if isinstance(tid, str):
            tid = self._find(tid)
        tid = self._resolve(tid)
        t = self.types[tid]
        if t["kind"] == KIND_ARRAY:
            return self.size(t["elem"]) * t["nelems"]
        if t["kind"] == KIND_PTR:
            return 8
        return t["size"]

    def enum(self, name: str) -> dict:
        """Enum values by short name: FLEET_VERDICT_DROP -> 'drop'."""
        values = self.types[self.by_name[(KIND_ENUM, name)]]["values"]
        prefix = _common_prefix(list(values))
        return {k[len(prefix):].lower(): v for k, v in values.items()}

    def const(self, enum_name: str, short: str) -> int:
        return self.enum(enum_name)[short]

    def pack(self, name: str, **fields) -> bytes:
        tid = self._find(name)
        buf = bytearray(self.size(tid))
        self._pack_into(buf, 0, tid, fields)
        return bytes(buf)

    def _pack_into(self, buf, off, tid, value):
        tid = self._resolve(tid)
        t = self.types[tid]
        if t["kind"] in (KIND_STRUCT, KIND_UNION):
            if isinstance(value, (bytes, bytearray)):
                buf[off:off + len(value)] = value
                return
            members = {m[0]: m for m in t["members"]}
            for key, val in value.items():
                _n, m_type, m_off = members[key]
                self._pack_into(buf, off + m_off, m_type, val)
        elif t["kind"] == KIND_ARRAY:
            esize = self.size(t["elem"])
            if isinstance(value, (bytes, bytearray)):
                buf[off:off + len(value)] = value
                return
            for i, val in enumerate(value):
                self._pack_into(buf, off + i * esize, t["elem"], val)
        elif t["kind"] == KIND_ENUM:
            if isinstance(value, str):
                value = self.enum(t["name"])[value]
            struct.pack_into("<i", buf, off, value)
        else:
            size = t["size"]
            if isinstance(value, (bytes, bytearray)):
                buf[off:off + size] = value
            else:
                buf[off:off + size] = int(value).to_bytes(size, "little", signed=value < 0)

    def unpack(self, name: str, data: bytes) -> dict:
        tid = self._resolve(self._find(name))
        out = {}
        for m_name, m_type, m_off in self.types[tid]["members"]:
            size = self.size(m_type)
            out[m_name] = int.from_bytes(data[m_off:m_off + size], "little")
        return out


def _common_prefix(names):
    if len(names) < 2:
        return names[0].rsplit("_", 1)[0] + "_" if names else ""
    first, last = min(names), max(names)
    i = 0
    while i < len(first) and first[i] == last[i]:
        i += 1
    return first[:first.rfind("_", 0, i + 1) + 1]


def ipv4(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, addr)


def ipv6(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, addr)


def port(num: int) -> bytes:
    return struct.pack("!H", num)


def lpm(cidr: str) -> bytes:
    """An LPM trie key {__u32 prefixlen; address} for a CIDR."""
    net = ipaddress.ip_network(cidr, strict=False)
    return struct.pack("<I", net.prefixlen) + net.network_address.packed
