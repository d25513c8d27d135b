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

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import btf as btf_mod
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import _common_prefix  # pylint: disable=protected-access

NAMED_KINDS = (btf_mod.KIND_STRUCT, btf_mod.KIND_TYPEDEF, btf_mod.KIND_ENUM, btf_mod.KIND_UNION)


class ObjectBtf:
    """Types of one BPF object, by name (parsed by the collection's BTF reader); packs raw test values."""

    def __init__(self, raw: bytes):
        self.btf = btf_mod.Btf.parse(raw)

    def _find(self, name: str) -> int:
        for kind in NAMED_KINDS:
            item = self.btf.find(name, kind)
            if item is not None:
                return item.id
        raise KeyError(name)

    def size(self, tid) -> int:
        return self.btf.size_of(self._find(tid) if isinstance(tid, str) else tid)

    def enum(self, name: str) -> dict:
        """Enum values by short name: FLEET_VERDICT_DROP -> 'drop'."""
        item = self.btf.find(name, btf_mod.KIND_ENUM)
        if item is None:
            raise KeyError(name)
        prefix = _common_prefix([m.name for m in item.members])
        return {m.name[len(prefix) :].lower(): m.value for m in item.members}

    def const(self, enum_name: str, short: str) -> int:
        return self.enum(enum_name)[short]

    def pack(self, name: str, **fields) -> bytes:
        tid = self._find(name)
        buf = bytearray(self.size(tid))
        self._pack_into(buf, 0, tid, fields)
        return bytes(buf)

    def _pack_into(self, buf, off, tid, value):
        item = self.btf.type(self.btf.resolve(tid))
        if isinstance(value, (bytes, bytearray)) and item.kind in (btf_mod.KIND_STRUCT, btf_mod.KIND_UNION, btf_mod.KIND_ARRAY):
            buf[off : off + len(value)] = value
        elif item.kind in (btf_mod.KIND_STRUCT, btf_mod.KIND_UNION):
            members = {m.name: m for m in item.members}
            for key, val in value.items():
                self._pack_into(buf, off + members[key].bit_offset // 8, members[key].type_id, val)
        elif item.kind == btf_mod.KIND_ARRAY:
            esize = self.size(item.type_id)
            for i, val in enumerate(value):
                self._pack_into(buf, off + i * esize, item.type_id, val)
        elif item.kind == btf_mod.KIND_ENUM:
            if isinstance(value, str):
                value = self.enum(item.name)[value]
            struct.pack_into("<i", buf, off, value)
        elif isinstance(value, (bytes, bytearray)):
            buf[off : off + item.size] = value
        else:
            buf[off : off + item.size] = int(value).to_bytes(item.size, "little", signed=value < 0)

    def unpack(self, name: str, data: bytes) -> dict:
        item = self.btf.type(self.btf.resolve(self._find(name)))
        out = {}
        for member in item.members:
            start = member.bit_offset // 8
            out[member.name] = int.from_bytes(data[start : start + self.size(member.type_id)], "little")
        return out


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
