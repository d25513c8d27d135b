# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Map keys and values between the operator's notation and bytes, through the map's BTF.

A codec is compiled once per BTF type and then converts many entries:

    codec = MapCodec.for_fd(map_fd)
    key = codec.encode_key("192.0.2.0/24")       # bytes, key_size long
    value = codec.encode_value("drop")          # bytes (for per-CPU maps: every CPU's copy)
    codec.decode_key(key), codec.decode_value(value)

Notation (see bpf/include/fleet/types.h and docs/maps.md):

- typedef ``fleet_ipv4_t`` "192.0.2.1", ``fleet_ipv6_t`` "2001:db8::1",
  ``fleet_mac_t`` "02:00:00:00:00:01", ``fleet_port_t`` / ``__be16`` / ``__be32`` /
  ``__be64`` integers stored in network order;
- a struct whose first member is ``__u32 prefixlen`` followed by an address is an
  LPM key written as a CIDR ("192.0.2.0/24"); a prefix with host bits set is an
  error (it would silently merge with another entry otherwise);
- an enum by the name of a value without the common prefix, case-insensitive
  (FLEET_VERDICT_DROP -> "drop"); an enum whose type name ends in ``_flags``
  takes a list of names OR-ed together; integers are accepted too;
- structs as dicts by member name (unknown member -> error listing the valid
  ones; missing members -> 0); a struct of one member also takes that
  member's value directly;
- integers with range checks; arrays as lists; ``char`` arrays as strings; bool;
- raw bytes in memory order as an escape hatch for any whole key or value, and
  for maps without BTF: a string "0xc0000201" or ``{"hex": "c0000201"}``.
  ``{"hex": ...}`` also works for any struct member.
- ``null`` for a value means all zero bytes.

Per-CPU maps take one value for every CPU, or ``{"per_cpu": [v0, v1, ...]}`` (a
plain list works too when the value type is not itself a list); reads give the
sum of numeric members over CPUs (``per_cpu="sum"``) or the list (``"list"``).
"""

from __future__ import annotations

import os
import socket
import struct
from itertools import repeat

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError, short_repr
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import btf as btf_mod
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_types

# the map-type facts live in map_types; these names stay for callers of this module
FD_VALUE_MAPS = map_types.FD_VALUE
DEVICE_MAPS = map_types.DEVICE
ARRAY_MAPS = map_types.ARRAY
UNDELETABLE_MAPS = map_types.UNDELETABLE
BATCH_DELETE_MAPS = map_types.BATCH_DELETE

BE_TYPEDEFS = {"__be16": 2, "__be32": 4, "__be64": 8, "fleet_port_t": 2}


SHORT_LIMIT = 200


def short(value, limit: int = SHORT_LIMIT) -> str:
    """A value in an error message, bounded (errors.short_repr): messages never carry a whole value."""
    return short_repr(value, limit)


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CodecError(FleetError, ValueError):
    """An entry that does not fit the type: where (e.g. 'entries[3].value.port') and why."""

    def __init__(self, where: str, message: str):
        self.where = _cap(where, SHORT_LIMIT)
        self.reason = _cap(message, 4 * SHORT_LIMIT)
        super().__init__("%s: %s" % (self.where, self.reason) if where else self.reason)


# ---------------------------------------------------------------- codecs


class Codec:
    """Bytes of one fixed size <-> notation."""

    size = 0
    is_list = False

    def encode(self, value, where: str) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes):
        raise NotImplementedError

    def describe(self) -> str:
        return "%d bytes" % self.size

    def encode_many(self, values: list, where) -> list:
        """Encode a list; where(i) names item i for errors (built only on error)."""
        enc = self.encode
        out = []
        for idx, value in enumerate(values):
            try:
                out.append(enc(value, ""))
            except CodecError as exc:
                raise CodecError(where(idx), exc.reason)
        return out


def _bulk(codec: Codec, fast, values: list, where) -> list:
    """Run fast(values) (a tight loop for plain strings); on any failure, find the bad item with codec.encode."""
    try:
        return fast(values)
    except (ValueError, TypeError, OSError, IndexError, AttributeError):
        pass
    return Codec.encode_many(codec, values, where)


def _parse_hex(text: str, size: int, where: str) -> bytes:
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    digits = digits.replace(" ", "").replace(":", "")
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        raise CodecError(where, "%s is not hex bytes" % short(text))
    if len(data) != size:
        raise CodecError(where, "%s is %d bytes; expected %d bytes (%d hex digits)" % (short(text), len(data), size, size * 2))
    return data


def _hex_of(data: bytes) -> str:
    return "0x" + data.hex()


class HexCodec(Codec):
    """Raw bytes only (no BTF, or a type without a notation)."""

    def __init__(self, size: int, what: str = ""):
        self.size = size
        self.what = what

    def encode(self, value, where):
        if isinstance(value, dict) and set(value) == {"hex"}:
            value = value["hex"]
        if isinstance(value, str):
            return _parse_hex(value, self.size, where)
        if isinstance(value, int) and not isinstance(value, bool) and self.size in (1, 2, 4, 8):
            return IntCodec(self.size, False).encode(value, where)
        raise CodecError(
            where,
            "expected raw bytes as a hex string of %d bytes (\"0x...\")%s, got %s" % (self.size, " for %s" % self.what if self.what else "", short(value)),
        )

    def decode(self, data):
        return _hex_of(data)

    def describe(self):
        return "hex bytes (%d)" % self.size


_INT_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _to_int(value, where: str, what: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 0)
        except ValueError:
            pass
    raise CodecError(where, "expected %s, got %s" % (what, short(value)))


class IntCodec(Codec):
    def __init__(self, size: int, signed: bool, big_endian: bool = False, name: str = ""):
        self.size = size
        self.signed = signed
        self.order = "big" if big_endian else "little"
        self.name = name
        bits = size * 8
        self.low = -(1 << (bits - 1)) if signed else 0
        self.high = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
        fmt = _INT_FORMATS.get(size)
        if fmt:
            self._struct = struct.Struct((">" if big_endian else "<") + (fmt.lower() if signed else fmt))
        else:
            self._struct = None

    def describe(self):
        return self.name or ("%s%d" % ("s" if self.signed else "u", self.size * 8))

    def encode(self, value, where):
        num = _to_int(value, where, "an integer (%s)" % self.describe())
        if num < self.low or num > self.high:
            raise CodecError(where, "%d is out of range for %s (%d..%d)" % (num, self.describe(), self.low, self.high))
        if self._struct is not None:
            return self._struct.pack(num)
        return num.to_bytes(self.size, self.order, signed=self.signed)

    def decode(self, data):
        if self._struct is not None:
            return self._struct.unpack(data)[0]
        return int.from_bytes(data, self.order, signed=self.signed)


class BoolCodec(Codec):
    def __init__(self, size: int):
        self.size = size

    def describe(self):
        return "bool"

    def encode(self, value, where):
        if isinstance(value, bool) or value in (0, 1):
            return int(bool(value)).to_bytes(self.size, "little")
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return int(value.lower() in ("true", "yes")).to_bytes(self.size, "little")
        raise CodecError(where, "expected true or false, got %s" % short(value))

    def decode(self, data):
        return any(data)


class FloatCodec(Codec):
    def __init__(self, size: int):
        self.size = size
        self._struct = struct.Struct("<f" if size == 4 else "<d")

    def encode(self, value, where):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self._struct.pack(float(value))
        raise CodecError(where, "expected a number, got %s" % short(value))

    def decode(self, data):
        return self._struct.unpack(data)[0]


class AddressCodec(Codec):
    """An IPv4 or IPv6 address in network order, written as text."""

    def __init__(self, family: int, name: str, example: str):
        self.family, self.name, self.example = family, name, example
        self.size = 4 if family == socket.AF_INET else 16

    def describe(self):
        return "%s address" % self.name

    def encode(self, value, where):
        try:
            return socket.inet_pton(self.family, value)
        except (OSError, TypeError):
            raise CodecError(where, "%s is not an %s address (expected e.g. \"%s\")" % (short(value), self.name, self.example))

    def decode(self, data):
        return socket.inet_ntop(self.family, data)

    def encode_many(self, values, where):
        pton, family = socket.inet_pton, self.family
        return _bulk(self, lambda vals: list(map(pton, repeat(family, len(vals)), vals)), values, where)


class MacCodec(Codec):
    size = 6

    def describe(self):
        return "MAC address"

    def encode(self, value, where):
        if isinstance(value, str):
            parts = value.replace("-", ":").split(":")
            if len(parts) == 6 and all(len(p) in (1, 2) for p in parts):
                try:
                    return bytes(int(p, 16) for p in parts)
                except ValueError:
                    pass
        raise CodecError(where, "%s is not a MAC address (expected e.g. \"02:00:00:00:00:01\")" % short(value))

    def decode(self, data):
        return ":".join("%02x" % b for b in data)


def _common_prefix(names: list) -> str:
    if not names:
        return ""
    if len(names) == 1:
        cut = names[0].rfind("_")
        return names[0][: cut + 1] if cut >= 0 else ""
    prefix = os.path.commonprefix(names)
    cut = prefix.rfind("_")
    prefix = prefix[: cut + 1] if cut >= 0 else ""
    # never strip a whole name
    if any(len(n) == len(prefix) for n in names):
        return ""
    return prefix


# last words of an enumerator that marks the end of an enum rather than a value (FLEET_VERDICT_MAX,
# FLEET_LB_STAT_MAX, ..._COUNT, ..._NUM); see end_marker()
END_MARKER_WORDS = frozenset({"max", "count", "num", "nr", "end", "last"})


def end_marker(members: list, type_name: str, prefix: str = None):
    """The enumerator that marks the end of an enum (a count or bound for arrays and loops), or None.

    It is the last enumerator declared, its value is above every other one, and its name (without the
    enum's common prefix) is, or ends in, MAX, COUNT, NUM, NR, END or LAST, or is the plural of the enum's
    own name (FLEET_EGRESS_OUTCOMES closes enum fleet_egress_outcome). Such an enumerator is not a value:
    bpf_map refuses it (by name, and any number from it on), and reading shows its number as a number."""
    if len(members) < 2:
        return None
    last = members[-1]
    if any(m.value >= last.value for m in members[:-1]):
        return None
    if prefix is None:
        prefix = _common_prefix([m.name for m in members])
    short_name = last.name[len(prefix) :].lower()
    word = short_name.rsplit("_", 1)[-1]
    plural = (type_name or "").rsplit("_", 1)[-1].lower() + "s"
    if short_name in END_MARKER_WORDS or word in END_MARKER_WORDS or (plural != "s" and short_name == plural):
        return last
    return None


class EnumCodec(Codec):
    def __init__(self, size: int, signed: bool, members: list, type_name: str, markers: bool = True):
        self.size = size
        self.type_name = type_name
        self.int = IntCodec(size, signed, name="enum %s" % type_name)
        prefix = _common_prefix([m.name for m in members])
        marker = end_marker(members, type_name, prefix) if markers else None
        self.marker = None
        self.by_value = {}
        self.lookup = {}
        self.order = []
        for m in members:
            short_name = m.name[len(prefix) :].lower()
            if m is marker:
                self.marker = (short_name, m.name, m.value)
                continue
            self.by_value.setdefault(m.value, short_name)
            self.lookup[short_name] = m.value
            self.lookup[m.name.lower()] = m.value
            self.order.append((short_name, m.value))

    def names(self) -> list:
        return [pair[0] for pair in self.order]

    def describe(self):
        return "enum %s (%s)" % (self.type_name, ", ".join(self.names()))

    def _refuse_marker(self, value, where):
        raise CodecError(
            where,
            "%s is the end marker of enum %s (%s = %d), not a value: expected one of %s"
            % (short(value), self.type_name, self.marker[1], self.marker[2], ", ".join(self.names())),
        )

    def _one(self, value, where) -> int:
        if isinstance(value, str):
            text = value.strip().lower()
            num = self.lookup.get(text)
            if num is not None:
                return num
            if self.marker is not None and text in (self.marker[0], self.marker[1].lower()):
                self._refuse_marker(value, where)
            try:
                num = int(value, 0)
            except ValueError:
                raise CodecError(where, "%s is not a value of enum %s: expected one of %s" % (short(value), self.type_name, ", ".join(self.names())))
        elif isinstance(value, int) and not isinstance(value, bool):
            num = value
        else:
            raise CodecError(where, "expected one of %s, got %s" % (", ".join(self.names()), short(value)))
        if self.marker is not None and num >= self.marker[2]:
            self._refuse_marker(value, where)
        return num

    def encode(self, value, where):
        return self.int.encode(self._one(value, where), where)

    def decode(self, data):
        num = self.int.decode(data)
        return self.by_value.get(num, num)


class FlagsCodec(EnumCodec):
    is_list = True

    def describe(self):
        return "flags %s (a list of %s)" % (self.type_name, ", ".join(self.names()))

    def encode(self, value, where):
        items = value if isinstance(value, (list, tuple)) else ([] if value is None else [value])
        num = 0
        for idx, item in enumerate(items):
            num |= self._one(item, "%s[%d]" % (where, idx) if isinstance(value, (list, tuple)) else where)
        return self.int.encode(num & ((1 << (self.size * 8)) - 1) if num < 0 else num, where)

    def decode(self, data):
        num = self.int.decode(data)
        out = []
        for name, bit in self.order:
            if bit and num & bit == bit:
                out.append(name)
                num &= ~bit
        if num:
            out.append(num)
        return out


class CharArrayCodec(Codec):
    def __init__(self, size: int):
        self.size = size

    def describe(self):
        return "string of at most %d bytes" % self.size

    def encode(self, value, where):
        if not isinstance(value, str):
            raise CodecError(where, "expected a string, got %s" % short(value))
        data = value.encode()
        if len(data) > self.size:
            raise CodecError(where, "%s is %d bytes; at most %d fit" % (short(value), len(data), self.size))
        return data.ljust(self.size, b"\0")

    def decode(self, data):
        return data.split(b"\0", 1)[0].decode(errors="replace")


class ArrayCodec(Codec):
    is_list = True

    def __init__(self, elem: Codec, count: int):
        self.elem = elem
        self.count = count
        self.size = elem.size * count

    def describe(self):
        return "list of %d %s" % (self.count, self.elem.describe())

    def encode(self, value, where):
        if not isinstance(value, (list, tuple)):
            raise CodecError(where, "expected a list of %d items (%s), got %s" % (self.count, self.elem.describe(), short(value)))
        if len(value) > self.count:
            raise CodecError(where, "%d items given; the array holds %d" % (len(value), self.count))
        out = b"".join(self.elem.encode(item, "%s[%d]" % (where, i)) for i, item in enumerate(value))
        return out.ljust(self.size, b"\0")

    def decode(self, data):
        step = self.elem.size
        return [self.elem.decode(data[i * step : (i + 1) * step]) for i in range(self.count)]


class StructCodec(Codec):
    def __init__(self, size: int, name: str, fields: list):
        # fields: (name, byte offset, codec) or (name, bit offset, bits, signed) for bitfields
        self.size = size
        self.name = name
        self.fields = fields
        self.names = [f[0] for f in fields]

    def describe(self):
        return "struct %s {%s}" % (self.name or "(anon)", ", ".join(self.names))

    def encode(self, value, where):
        if not isinstance(value, dict) or (set(value) == {"hex"} and "hex" not in self.names):
            if isinstance(value, dict):
                return _parse_hex(value["hex"], self.size, where)
            if len(self.fields) == 1 and len(self.fields[0]) == 3:
                name, offset, codec = self.fields[0]
                return codec.encode(value, where).rjust(offset + codec.size, b"\0").ljust(self.size, b"\0")
            raise CodecError(where, "expected a dict with members %s, got %s" % (", ".join(self.names), short(value)))
        unknown = [k for k in value if k not in self.names]
        if unknown:
            raise CodecError(where, "unknown member %s of struct %s: valid members are %s" % (short(unknown[0]), self.name or "(anon)", ", ".join(self.names)))
        buf = bytearray(self.size)
        bits = 0
        for spec in self.fields:
            fname = spec[0]
            if fname not in value:
                continue
            sub = "%s.%s" % (where, fname) if where else fname
            if len(spec) == 3:
                offset, codec = spec[1], spec[2]
                item = value[fname]
                if isinstance(item, dict) and set(item) == {"hex"} and not isinstance(codec, StructCodec):
                    data = _parse_hex(item["hex"], codec.size, sub)
                else:
                    data = codec.encode(item, sub)
                buf[offset : offset + codec.size] = data
            else:
                bit_off, nbits, signed = spec[1], spec[2], spec[3]
                num = _to_int(value[fname], sub, "an integer")
                low, high = (-(1 << (nbits - 1)), (1 << (nbits - 1)) - 1) if signed else (0, (1 << nbits) - 1)
                if num < low or num > high:
                    raise CodecError(sub, "%d is out of range for a %d-bit field (%d..%d)" % (num, nbits, low, high))
                bits |= (num & ((1 << nbits) - 1)) << bit_off
        if bits:
            whole = int.from_bytes(buf, "little") | bits
            buf = bytearray(whole.to_bytes(self.size, "little"))
        return bytes(buf)

    def decode(self, data):
        out = {}
        whole = None
        for spec in self.fields:
            if len(spec) == 3:
                fname, offset, codec = spec
                out[fname] = codec.decode(data[offset : offset + codec.size])
            else:
                fname, bit_off, nbits, signed = spec
                if whole is None:
                    whole = int.from_bytes(data, "little")
                num = (whole >> bit_off) & ((1 << nbits) - 1)
                if signed and num >= 1 << (nbits - 1):
                    num -= 1 << nbits
                out[fname] = num
        return out


class LpmCodec(Codec):
    """struct {__u32 prefixlen; <address>}: "192.0.2.0/24"."""

    def __init__(self, size: int, addr_len: int, fallback: StructCodec):
        self.size = size
        self.addr_len = addr_len
        self.family = socket.AF_INET if addr_len == 4 else socket.AF_INET6
        self.max_len = addr_len * 8
        self.fallback = fallback
        self._head = struct.Struct("<I")
        self._pad = size - 4 - addr_len

    def describe(self):
        return "%s CIDR" % ("IPv4" if self.addr_len == 4 else "IPv6")

    def encode(self, value, where):
        if isinstance(value, dict):
            return self.fallback.encode(value, where)
        if not isinstance(value, str):
            raise CodecError(
                where, "expected a %s such as %s, got %s" % (self.describe(), "\"192.0.2.0/24\"" if self.addr_len == 4 else "\"2001:db8::/32\"", short(value))
            )
        addr, sep, plen = value.partition("/")
        try:
            packed = socket.inet_pton(self.family, addr)
        except OSError:
            raise CodecError(where, "%s is not an %s CIDR: bad address %s" % (short(value), self.describe()[:4], short(addr)))
        if sep:
            if not (plen.isascii() and plen.isdigit()) or int(plen) > self.max_len:
                raise CodecError(where, "%s: prefix length %s is not 0..%d" % (short(value), short(plen), self.max_len))
            length = int(plen)
            if length < self.max_len:
                num = int.from_bytes(packed, "big")
                host = num & ((1 << (self.max_len - length)) - 1)
                if host:
                    net = socket.inet_ntop(self.family, (num - host).to_bytes(self.addr_len, "big"))
                    raise CodecError(where, "%s has host bits set: expected the network address, %s/%d" % (short(value), net, length))
        else:
            length = self.max_len
        return self._head.pack(length) + packed + b"\0" * self._pad

    def encode_many(self, values, where):
        return _bulk(self, self._fast, values, where)

    def _fast(self, values: list) -> list:
        # the same checks as encode(), in one tight loop over plain strings; a prefix length is checked once
        # and kept with its packed head and host mask (keyed None when there is no "/": the full length)
        pton, family, from_bytes = socket.inet_pton, self.family, int.from_bytes
        pad = b"\0" * self._pad
        specs = {}
        out = []
        append = out.append
        for value in values:
            addr, sep, plen = value.partition("/")
            spec = specs.get(plen if sep else None)
            if spec is None:
                spec = specs[plen if sep else None] = self._prefix_spec(sep, plen)
            packed = pton(family, addr)
            if spec[1] and from_bytes(packed, "big") & spec[1]:
                raise ValueError(value)
            append(spec[0] + packed + pad)
        return out

    def _prefix_spec(self, sep: str, plen: str):
        """(packed prefix length, host bit mask) of a prefix length as written after the "/" (none: the full
        length); ValueError when it is not 0..max_len."""
        if not sep:
            length = self.max_len
        elif plen.isascii() and plen.isdigit() and int(plen) <= self.max_len:
            length = int(plen)
        else:
            raise ValueError(plen)
        return self._head.pack(length), (1 << (self.max_len - length)) - 1

    def decode(self, data):
        length = self._head.unpack_from(data)[0]
        return "%s/%d" % (socket.inet_ntop(self.family, data[4 : 4 + self.addr_len]), length)


class DeviceCodec(Codec):
    """devmap values: an interface name (in the module's network namespace) or an ifindex."""

    def __init__(self, inner: Codec):
        self.inner = inner
        self.size = inner.size

    def describe(self):
        return "interface name or ifindex"

    def encode(self, value, where):
        if isinstance(value, str) and not value.strip().isdigit() and not value.startswith("0x"):
            try:
                value = socket.if_nametoindex(value)
            except OSError:
                raise CodecError(where, "no interface named %s here" % short(value))
        if isinstance(self.inner, StructCodec) and not isinstance(value, dict):
            value = {self.inner.names[0]: value}
        return self.inner.encode(value, where)

    def decode(self, data):
        ifindex = int.from_bytes(data[:4], "little")
        try:
            name = socket.if_indextoname(ifindex)
        except OSError:
            name = None
        if self.size == 4:
            return name or ifindex
        out = self.inner.decode(data)
        if isinstance(out, dict) and name:
            out[self.inner.names[0]] = name
        return out


class KeyLayoutCodec(Codec):
    """An integer key made of parts, as a program computes it: struct fleet_key_<map> in the object's BTF lists
    the parts, and every part after the first is an enum whose end marker is its radix. filter_stats'
    struct fleet_key_filter_stats {enum fleet_filter_reason reason; enum fleet_verdict verdict;} means
    key = reason * FLEET_VERDICT_MAX + verdict, written and read as {reason: port, verdict: drop}."""

    def __init__(self, inner: IntCodec, type_name: str, parts: list):
        self.inner = inner
        self.size = inner.size
        self.type_name = type_name
        self.parts = parts  # [(name, codec, radix)], radix None for the first part

    def describe(self):
        return "struct %s {%s} or the number" % (self.type_name, ", ".join(p[0] for p in self.parts))

    def encode(self, value, where):
        if not isinstance(value, dict):
            return self.inner.encode(value, where)
        names = [p[0] for p in self.parts]
        if set(value) != set(names):
            raise CodecError(where, "expected a dict with exactly the members %s, got %s" % (", ".join(names), short(value)))
        num = 0
        for name, codec, radix in self.parts:
            sub = "%s.%s" % (where, name) if where else name
            part = int.from_bytes(codec.encode(value[name], sub), "little", signed=False)
            num = part if radix is None else num * radix + part
        return self.inner.encode(num, where)

    def decode(self, data):
        num = self.inner.decode(data)
        out = {}
        for name, codec, radix in reversed(self.parts):
            part, num = (num, 0) if radix is None else (num % radix, num // radix)
            out[name] = codec.decode(part.to_bytes(codec.size, "little")) if part < 1 << (8 * codec.size) else part
        return dict(reversed(list(out.items())))


KEY_LAYOUT_PREFIX = "fleet_key_"


def key_layout(btf: btf_mod.Btf, map_name: str, key: Codec):
    """A KeyLayoutCodec for map_name's integer key when the BTF holds struct fleet_key_<map_name>, else None."""
    if type(key) is not IntCodec or key.signed or not map_name:  # pylint: disable=unidiomatic-typecheck
        return None
    item = btf.find(KEY_LAYOUT_PREFIX + map_name, btf_mod.KIND_STRUCT)
    if item is None or not item.members:
        return None
    parts = []
    for idx, member in enumerate(item.members):
        codec = compile_type(btf, member.type_id)
        if idx == 0:
            if not isinstance(codec, (IntCodec, EnumCodec)):
                return None
            parts.append((member.name, codec, None))
        elif isinstance(codec, EnumCodec) and codec.marker is not None and not isinstance(codec, FlagsCodec):
            parts.append((member.name, codec, codec.marker[2]))
        else:
            return None
    return KeyLayoutCodec(key, item.name, parts)


# ---------------------------------------------------------------- compiling codecs from BTF


def _special(name: str):
    if name == "fleet_ipv4_t":
        return AddressCodec(socket.AF_INET, "IPv4", "192.0.2.1")
    if name in ("fleet_ipv6_t", "fleet_ipv6"):
        return AddressCodec(socket.AF_INET6, "IPv6", "2001:db8::1")
    if name in ("fleet_mac_t", "fleet_mac"):
        return MacCodec()
    if name in BE_TYPEDEFS:
        return IntCodec(BE_TYPEDEFS[name], False, big_endian=True, name=name)
    return None


def compile_type(btf: btf_mod.Btf, type_id: int, depth: int = 0) -> Codec:
    """A codec for BTF type type_id (typedef names first, then the underlying kind)."""
    if depth > 32:
        raise btf_mod.BtfError("type nesting deeper than 32 at type %d" % type_id)
    item = btf.type(type_id)
    while item.kind in btf_mod.QUALIFIERS or item.kind == btf_mod.KIND_TYPEDEF:
        if item.kind == btf_mod.KIND_TYPEDEF:
            special = _special(item.name)
            if special is not None and special.size == btf.size_of(item.id):
                return special
        item = btf.type(item.type_id)
    kind = item.kind
    if kind == btf_mod.KIND_INT:
        if item.encoding & btf_mod.INT_BOOL:
            return BoolCodec(item.size)
        return IntCodec(item.size, item.signed, name=item.name)
    if kind in (btf_mod.KIND_ENUM, btf_mod.KIND_ENUM64):
        if item.name.endswith("_flags"):
            return FlagsCodec(item.size, item.signed, item.members, item.name, markers=False)
        return EnumCodec(item.size, item.signed, item.members, item.name or "(anon)")
    if kind == btf_mod.KIND_FLOAT and item.size in (4, 8):
        return FloatCodec(item.size)
    if kind == btf_mod.KIND_PTR:
        return IntCodec(8, False, name="pointer")
    if kind == btf_mod.KIND_ARRAY:
        elem = btf.type(btf.resolve(item.type_id))
        if elem.kind == btf_mod.KIND_INT and elem.size == 1 and (elem.encoding & btf_mod.INT_CHAR or elem.name == "char"):
            return CharArrayCodec(item.nelems)
        return ArrayCodec(compile_type(btf, item.type_id, depth + 1), item.nelems)
    if kind in (btf_mod.KIND_STRUCT, btf_mod.KIND_UNION):
        special = _special(item.name)
        if special is not None and special.size == item.size:
            return special
        fields = []
        for m in item.members:
            if m.bitfield_size or m.bit_offset % 8:
                mt = btf.type(btf.resolve(m.type_id))
                nbits = m.bitfield_size or mt.size * 8
                fields.append((m.name, m.bit_offset, nbits, mt.signed))
                continue
            sub = compile_type(btf, m.type_id, depth + 1)
            if not m.name and isinstance(sub, StructCodec):
                # an anonymous struct or union: its members are reached directly
                for spec in sub.fields:
                    if len(spec) == 3:
                        fields.append((spec[0], spec[1] + m.bit_offset // 8, spec[2]))
                    else:
                        fields.append((spec[0], spec[1] + m.bit_offset, spec[2], spec[3]))
                continue
            fields.append((m.name, m.bit_offset // 8, sub))
        # a union is a struct whose members overlap: every view is shown, any one may be written
        codec = StructCodec(item.size, item.name, fields)
        if kind == btf_mod.KIND_STRUCT:
            return _lpm(btf, item, fields, codec) or codec
        return codec
    return HexCodec(btf.size_of(type_id), item.kind_name)


def _lpm(btf, item, fields, codec):
    if len(fields) != 2 or len(fields[0]) != 3 or len(fields[1]) != 3:
        return None
    (name0, off0, c0), (_name1, off1, c1) = fields
    if name0 != "prefixlen" or off0 != 0 or not isinstance(c0, IntCodec) or c0.size != 4 or off1 != 4:
        return None
    if isinstance(c1, AddressCodec) or (c1.size in (4, 16) and isinstance(c1, (IntCodec, ArrayCodec, HexCodec))):
        return LpmCodec(item.size, c1.size, codec)
    return None


# ---------------------------------------------------------------- whole keys and values of a map


def _raw_or(codec: Codec):
    """Top-level encoder: "0x..." strings and {"hex": ...} are raw bytes, anything else goes to the codec."""
    size = codec.size
    enc = codec.encode

    def encode(value, where):
        if isinstance(value, str) and value[:2] in ("0x", "0X"):
            return _parse_hex(value, size, where)
        if isinstance(value, dict) and len(value) == 1 and "hex" in value:
            return _parse_hex(value["hex"], size, where) if isinstance(value["hex"], str) else enc(value, where)
        return enc(value, where)

    return encode


# Per-CPU values summed by per_cpu="sum": only counters. A counter is a member of struct fleet_counter
# (bpf/include/fleet/types.h: packets, bytes; the counter type of every program of this collection), or a
# per-CPU value that is itself a plain unsigned integer (one counter per key). Everything else (a
# connection-table entry's backend id, a timestamp, an enum, an address) is not added up: a member whose
# value is the same on every CPU is shown once, one that differs is shown as the list of its per-CPU values.
COUNTER_STRUCTS = frozenset({"fleet_counter"})


def is_counter(codec: Codec) -> bool:
    """True for a plain unsigned integer (not an enum, bool, address or network-order number)."""
    return type(codec) is IntCodec and not codec.signed and codec.order == "little"  # pylint: disable=unidiomatic-typecheck


def summarize(codec: Codec, values: list):
    """One view of a per-CPU value decoded per CPU: counters summed, other members once when every CPU
    agrees, else per CPU (see COUNTER_STRUCTS)."""
    if not values:
        return None
    if isinstance(codec, StructCodec) and codec.name in COUNTER_STRUCTS:
        return {name: _summarize_member(spec, values, True) for name, spec in zip(codec.names, codec.fields)}
    if is_counter(codec):
        return sum(values)
    if isinstance(codec, StructCodec) and not isinstance(codec, LpmCodec) and all(isinstance(v, dict) for v in values):
        return {name: _summarize_member(spec, values, False) for name, spec in zip(codec.names, codec.fields)}
    return _same_or_list(values)


def _summarize_member(spec: tuple, values: list, counters: bool):
    column = [v[spec[0]] for v in values]
    if len(spec) == 4:  # a bitfield
        return sum(column) if counters and not spec[3] else _same_or_list(column)
    sub = spec[2]
    if counters and is_counter(sub):
        return sum(column)
    if isinstance(sub, StructCodec):
        return summarize(sub, column)
    return _same_or_list(column)


def _same_or_list(values: list):
    first = values[0]
    return first if all(v == first for v in values) else values


def _sum(values: list):
    """Kept for callers of the earlier API: numbers summed as they come (see summarize for per-CPU maps)."""
    first = values[0]
    if isinstance(first, bool) or not isinstance(first, (int, float, dict, list)):
        return first
    if isinstance(first, (int, float)):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return sum(values)
        return first
    if isinstance(first, dict):
        return {k: _sum([v[k] for v in values]) for k in first}
    if all(isinstance(v, list) and len(v) == len(first) for v in values):
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for v in values for x in v):
            return [_sum([v[i] for v in values]) for i in range(len(first))]
    return first


class MapCodec:
    """Keys and values of one map: the codecs for both and the per-CPU layout."""

    def __init__(self, info: dict, key: Codec, value: Codec, ncpus: int = 1):
        self.info = info
        self.map_type = info["type"]
        self.key = key
        self.value = value
        self.key_size = info["key_size"]
        self.value_size = info["value_size"]
        self.per_cpu = self.map_type in map_types.PERCPU
        self.ncpus = ncpus if self.per_cpu else 1
        self.stride = map_types.per_cpu_stride(self.value_size) if self.per_cpu else self.value_size
        # the size of one element's value as the syscalls read and write it
        self.value_buf_size = map_types.value_buf_size(self.map_type, self.value_size, self.ncpus)
        # arrays hold indexes 0 .. max_entries - 1: a key beyond is refused before anything is written
        self.key_limit = info["max_entries"] if self.map_type in map_types.ARRAY and self.key_size <= 8 else None
        self._enc_key = _raw_or(key)
        self._enc_value = _raw_or(value)
        self.zero_value = b"\0" * self.value_buf_size

    @classmethod
    def build(cls, info: dict, btf_raw: bytes = b"", ncpus: int = 0) -> MapCodec:
        """Codecs from map info (libbpf.map_info) and the map's BTF blob (empty: raw hex)."""
        key_codec = value_codec = None
        if btf_raw and (info.get("btf_key_type_id") or info.get("btf_value_type_id")):
            parsed = btf_mod.Btf.parse(btf_raw)
            if info.get("btf_key_type_id"):
                key_codec = compile_type(parsed, info["btf_key_type_id"])
                key_codec = key_layout(parsed, info.get("name", ""), key_codec) or key_codec
            if info.get("btf_value_type_id"):
                value_codec = compile_type(parsed, info["btf_value_type_id"])
        if key_codec is None or key_codec.size != info["key_size"]:
            key_codec = _default_int(info["key_size"]) if info["type"] in ARRAY_MAPS else HexCodec(info["key_size"])
        if value_codec is None or value_codec.size != info["value_size"]:
            value_codec = _default_int(info["value_size"]) if info["type"] in FD_VALUE_MAPS | DEVICE_MAPS else HexCodec(info["value_size"])
        if info["type"] in DEVICE_MAPS:
            value_codec = DeviceCodec(value_codec)
        if not ncpus and info["type"] in map_types.PERCPU:
            ncpus = libbpf.num_possible_cpus()
        return cls(info, key_codec, value_codec, ncpus or 1)

    @classmethod
    def for_fd(cls, map_fd: int, btf_raw: bytes = None, info: dict = None) -> MapCodec:
        """The codec of an open map; btf_raw and info (type ids) may come from elsewhere, e.g. the object the
        map was loaded from when the kernel refused the map's BTF (an enum as an array's key)."""
        live = libbpf.map_info(map_fd)
        if info is not None:
            live = dict(live, btf_key_type_id=info.get("btf_key_type_id", 0), btf_value_type_id=info.get("btf_value_type_id", 0))
        if btf_raw is None:
            btf_raw = libbpf.btf_raw(live["btf_id"]) if live.get("btf_id") else b""
        return cls.build(live, btf_raw)

    # -- encoding

    def encode_key(self, value, where: str = "key") -> bytes:
        data = self._enc_key(value, where)
        if self.key_limit is not None:
            self.check_index(data, where)
        return data

    def check_index(self, data: bytes, where: str) -> None:
        index = int.from_bytes(data, "little")
        if index >= self.key_limit:
            raise CodecError(where, "index %d is out of range: the %s map has %d elements (0..%d)" % (index, self.map_type, self.key_limit, self.key_limit - 1))

    def encode_keys(self, values: list, where) -> list:
        """encode_key for a list (a plain list file): where(i) names item i for errors."""
        out = self.key.encode_many(values, where)
        if self.key_limit is not None:
            limit = self.key_limit
            for idx, data in enumerate(out):
                if int.from_bytes(data, "little") >= limit:
                    self.check_index(data, where(idx))
        return out

    def encode_value(self, value, where: str = "value") -> bytes:
        if value is None:
            return self.zero_value
        if not self.per_cpu:
            return self._enc_value(value, where)
        per_cpu = None
        if isinstance(value, dict) and set(value) == {"per_cpu"}:
            per_cpu = value["per_cpu"]
            if not isinstance(per_cpu, list):
                raise CodecError(where + ".per_cpu", "expected a list with one value per CPU")
        elif isinstance(value, list) and not self.value.is_list:
            per_cpu = value
        if per_cpu is None:
            one = self._enc_value(value, where).ljust(self.stride, b"\0")
            return one * self.ncpus
        if len(per_cpu) != self.ncpus:
            raise CodecError(where, "%d per-CPU values given; this host has %d possible CPUs" % (len(per_cpu), self.ncpus))
        return b"".join(self._enc_value(v, "%s[%d]" % (where, i)).ljust(self.stride, b"\0") for i, v in enumerate(per_cpu))

    # -- decoding

    def decode_key(self, data: bytes):
        return self.key.decode(data)

    def decode_value(self, data: bytes, per_cpu: str = "sum"):
        """A value in the notation; per-CPU values: per_cpu="list" one per CPU, "sum" counters summed and
        other members once when every CPU agrees (summarize)."""
        if not self.per_cpu:
            return self.value.decode(data)
        size = self.value_size
        values = [self.value.decode(data[i * self.stride : i * self.stride + size]) for i in range(self.ncpus)]
        if per_cpu == "list":
            return values
        return summarize(self.value, values)


def _default_int(size: int) -> Codec:
    return IntCodec(size, False) if size in (1, 2, 4, 8) else HexCodec(size)


# ---------------------------------------------------------------- reading a whole map


def read_raw(map_fd: int, codec: MapCodec):
    """All elements as (keys, values, count): two bytes objects, count elements of key_size /
    value_buf_size each (map_types.read_all)."""
    return map_types.read_all(map_fd, codec.info, codec.ncpus if codec.per_cpu else 0)


def split(data: bytes, size: int, count: int) -> list:
    return [data[i : i + size] for i in range(0, size * count, size)]


def read_entries(map_fd: int, per_cpu: str = "sum", btf_raw: bytes = None, info: dict = None) -> list:
    """Every element of the map in the operator's notation: [{"key": ..., "value": ...}].

    per_cpu: "sum" (counters summed over CPUs, see summarize) or "list" (one value per CPU).
    btf_raw and info (btf_key_type_id, btf_value_type_id) type a map whose own BTF the kernel lacks."""
    codec = MapCodec.for_fd(map_fd, btf_raw, info)
    keys, values, count = read_raw(map_fd, codec)
    ks, vs = codec.key_size, codec.value_buf_size
    return [{"key": codec.decode_key(keys[i * ks : (i + 1) * ks]), "value": codec.decode_value(values[i * vs : (i + 1) * vs], per_cpu)} for i in range(count)]
