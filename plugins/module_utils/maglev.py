# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Weighted Maglev lookup tables and the map entries of the XDP load balancer (bpf/xdp_lb.c).

Every LB host computes the same table for the same input: backends are sorted
by name, their permutations come from hashlib digests (never Python's
``hash()``, which is salted per process), and nothing depends on dict order.

Maglev (Eisenbud et al., NSDI 2016), weighted: backend *i* walks the
permutation ``offset_i, offset_i + skip_i, ...`` modulo the prime table size M
and claims the first free slot it meets. Each round every backend earns its
weight in credit and claims one slot per ``max(weights)`` of credit, so slot
counts follow the weights; a backend of weight 0 claims nothing (draining: its
established flows live on in the connection table).

The data plane picks a slot from a 32-bit flow hash by multiply-shift
(``slot = hash * M >> 32``, no division), with the hash below (``flow_hash``),
which ``xdp_lb`` computes the same way in C (``bpf/include/fleet/hash.h``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError

DEFAULT_RING_SIZE = 65537
MIN_SLOTS_PER_BACKEND = 100
BACKEND_NONE = 0xFFFFFFFF

PROTOS = {"tcp": 6, "udp": 17}
MODES = ("dsr", "ipip")


class MaglevError(FleetError, ValueError):
    """Bad input for a table or an LB declaration; the message names field, value and expectation."""


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def ring_size_for(backends: int, min_slots: int = MIN_SLOTS_PER_BACKEND) -> int:
    """The smallest prime >= DEFAULT_RING_SIZE holding `min_slots` slots per backend."""
    n = max(DEFAULT_RING_SIZE, backends * min_slots)
    while not is_prime(n):
        n += 1
    return n


def _digest(tag: bytes, name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8, person=tag).digest(), "big")


def permutation(name: str, size: int) -> tuple:
    """(offset, skip) of a backend's permutation of the slots, from two independent digests."""
    offset = _digest(b"fleet-mgl-offset", name) % size
    skip = _digest(b"fleet-mgl-skip", name) % (size - 1) + 1
    return offset, skip


def build_table(backends, size: int = DEFAULT_RING_SIZE, min_slots: int = MIN_SLOTS_PER_BACKEND) -> list:
    """The Maglev table for backends [(name, weight), ...]: a list of `size` indexes into `backends`.

    Slots hold the index of the backend in the list as given; the result does not
    depend on the order of the list (only on names and weights). With no backend of
    positive weight every slot holds BACKEND_NONE. The ring must hold at least
    `min_slots` slots per backend (100 keeps the spread within about 1% of the weights).
    """
    if not is_prime(size):
        raise MaglevError("ring size %r: expected a prime number (e.g. 65537)" % (size,))
    names = [entry[0] for entry in backends]
    if len(set(names)) != len(names):
        raise MaglevError("backends: names must be unique, got %r" % (names,))
    for name, weight in backends:
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise MaglevError("backend %r weight %r: expected an integer >= 0" % (name, weight))
    active = sorted((name, weight, idx) for idx, (name, weight) in enumerate(backends) if weight > 0)
    if not active:
        return [BACKEND_NONE] * size
    if size < max(min_slots, 1) * len(active):
        raise MaglevError("ring size %d: expected at least %d slots per backend (%d backends); see ring_size_for()"
                          % (size, min_slots, len(active)))
    count = len(active)
    pos = [0] * count
    skips = [0] * count
    weights = [0] * count
    owner = [0] * count
    for k, (name, weight, idx) in enumerate(active):
        pos[k], skips[k] = permutation(name, size)
        weights[k] = weight
        owner[k] = idx
    return _fill(size, pos, skips, weights, owner)


TAIL_SLOTS = 256


def _fill(size: int, pos: list, skips: list, weights: list, owner: list) -> list:
    """The Maglev walk: in each round every backend earns its weight in credit and, per max(weights) of
    credit, claims the next free slot of its permutation (pos[k], pos[k] + skips[k], ... modulo size).

    The hot loop keeps to locals and skips the credit bookkeeping when all weights are equal. Walking a
    permutation costs about size / free probes per claim, so for the last TAIL_SLOTS free slots each claim
    instead picks, among the free slots, the one its permutation reaches first: the same slot, found in
    O(free) from the step count (slot - pos) * skip^-1 modulo the prime size.
    """
    table = [-1] * size
    count = len(pos)
    equal = min(weights) == max(weights)
    wmax = max(weights)
    credit = [0] * count
    switch = size - min(size, TAIL_SLOTS)
    filled = 0
    k = -1
    while filled < switch:
        for k in range(count):
            if not equal:
                credit[k] += weights[k]
                if credit[k] < wmax:
                    continue
                credit[k] -= wmax
            c = pos[k]
            skip = skips[k]
            while table[c] >= 0:
                c += skip
                if c >= size:
                    c -= size
            table[c] = owner[k]
            c += skip
            pos[k] = c - size if c >= size else c
            filled += 1
            if filled == switch:
                break
        else:
            k = -1
    # the tail: resume with the backend after the last one served
    free = [c for c in range(size) if table[c] < 0]
    inverse = [pow(skip, size - 2, size) for skip in skips]
    start = k + 1
    while free:
        for k in range(start, count):
            if not equal:
                credit[k] += weights[k]
                if credit[k] < wmax:
                    continue
                credit[k] -= wmax
            p, inv = pos[k], inverse[k]
            steps = [(c - p) * inv % size for c in free]
            i = steps.index(min(steps))
            c = free[i]
            free[i] = free[-1]
            free.pop()
            table[c] = owner[k]
            c += skips[k]
            pos[k] = c - size if c >= size else c
            if not free:
                break
        start = 0
    return table


# ---------------------------------------------------------------- flow hash (same as hash.h)

_M32 = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def hash_words(words, seed: int = 0) -> int:
    """MurmurHash3 (x86, 32-bit) over whole 32-bit words; length = 4 * len(words) bytes."""
    h = seed
    for k in words:
        k = (k * 0xCC9E2D51) & _M32
        k = ((k << 15) | (k >> 17)) & _M32
        k = (k * 0x1B873593) & _M32
        h ^= k
        h = ((h << 13) | (h >> 19)) & _M32
        h = (h * 5 + 0xE6546B64) & _M32
    h ^= 4 * len(words)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def flow_words(src: str, dst: str, sport: int, dport: int, proto: int) -> list:
    """The words the data plane hashes: addresses as loaded from the packet (little-endian
    loads of network-order bytes), then the two ports as one load, then the protocol."""
    s = ipaddress.ip_address(src).packed
    d = ipaddress.ip_address(dst).packed
    words = list(struct.unpack("<%dI" % (len(s) // 4), s)) + list(struct.unpack("<%dI" % (len(d) // 4), d))
    words.append(struct.unpack("<I", struct.pack(">HH", sport, dport))[0])
    words.append(proto)
    return words


def flow_hash(src: str, dst: str, sport: int, dport: int, proto: int) -> int:
    return hash_words(flow_words(src, dst, sport, dport, proto))


def slot_of(hash_value: int, size: int) -> int:
    """Multiply-shift reduction of a 32-bit hash to a slot (what xdp_lb does)."""
    return (hash_value * size) >> 32


# ---------------------------------------------------------------- declarations -> map entries

def _ip(value, field: str, version: int = 0):
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        raise MaglevError("%s %r: expected an IPv4 or IPv6 address" % (field, value)) from None
    if version and addr.version != version:
        raise MaglevError("%s %r: expected an IPv%d address" % (field, value, version))
    return addr


def _mac(value, field: str) -> str:
    text = str(value).lower()
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(ch in "0123456789abcdef" for ch in p) for p in parts):
        raise MaglevError("%s %r: expected a MAC address like 02:00:00:00:00:01" % (field, value))
    return text


VIP_FIELDS = ("vip", "port", "proto", "mode", "backends")
BACKEND_FIELDS = ("address", "mac", "weight", "name")
CONFIG_FIELDS = ("udp_timeout_ms", "lb_mac", "tunnel_src_v4", "tunnel_src_v6")


def backend_key(backend: dict) -> str:
    """The name a backend is known by (its permutation key): `name` or its address."""
    return str(backend.get("name") or backend.get("address"))


def check_fields(item, where: str, allowed) -> None:
    """Refuse a field that is not in allowed (a typo such as `wieght` or `backend`), naming it."""
    unknown = sorted(str(key) for key in item if key not in allowed)
    if unknown:
        raise MaglevError("%s.%s %r: expected no such field; valid fields: %s"
                          % (where, unknown[0], item[unknown[0]], ", ".join(allowed)))


def _int(value, field: str, low: int, high: int, expected: str) -> int:
    """An integer (or a decimal string, as Jinja templating gives) in low..high."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MaglevError("%s %r: expected %s" % (field, value, expected))
    return value


class Backend:
    """One backend of one VIP, validated: permutation key, weight, address, MAC (lower case)."""

    __slots__ = ("key", "weight", "address", "mac")

    def __init__(self, key: str, weight: int, address, mac: str):
        self.key, self.weight, self.address, self.mac = key, weight, address, mac


class Vip:
    """One VIP declaration, validated; ident is 'address:port/proto' (IPv6 without brackets)."""

    __slots__ = ("ident", "address", "port", "proto", "mode", "backends")

    def __init__(self, ident: str, address, port: int, proto: str, mode: str, backends: list):
        self.ident, self.address, self.port, self.proto, self.mode, self.backends = \
            ident, address, port, proto, mode, backends


def validate_vips(vips, where: str = "vips") -> list:
    """Check every VIP declaration and return [Vip]; the first problem raises MaglevError naming
    the field (vips[0].backends[1].weight), its value and what was expected. Unknown fields are
    refused at every level, so a typo never builds a ring without backends or ignores a weight."""
    if not isinstance(vips, (list, tuple)):
        raise MaglevError("%s %r: expected a list of VIP declarations {%s}" % (where, vips, ", ".join(VIP_FIELDS)))
    seen_vips = set()
    out = []
    for n, vip in enumerate(vips):
        vwhere = "%s[%d]" % (where, n)
        if not isinstance(vip, dict):
            raise MaglevError("%s %r: expected a dict with fields %s" % (vwhere, vip, ", ".join(VIP_FIELDS)))
        check_fields(vip, vwhere, VIP_FIELDS)
        addr = _ip(vip.get("vip"), vwhere + ".vip")
        port = _int(vip.get("port"), vwhere + ".port", 1, 65535, "an integer 1..65535")
        proto = vip.get("proto", "tcp")
        if proto not in PROTOS:
            raise MaglevError("%s.proto %r: expected one of %s" % (vwhere, proto, ", ".join(PROTOS)))
        mode = vip.get("mode", "dsr")
        if mode not in MODES:
            raise MaglevError("%s.mode %r: expected one of %s" % (vwhere, mode, ", ".join(MODES)))
        ident = "%s:%d/%s" % (addr, port, proto)
        if ident in seen_vips:
            raise MaglevError("%s: VIP %s declared twice" % (vwhere, ident))
        seen_vips.add(ident)
        if "backends" not in vip:
            raise MaglevError("%s.backends: missing; expected a list of {%s} (an empty list drops the VIP's "
                              "new flows)" % (vwhere, ", ".join(BACKEND_FIELDS)))
        declared = vip["backends"]
        if not isinstance(declared, (list, tuple)):
            raise MaglevError("%s.backends %r: expected a list of {%s}" % (vwhere, declared, ", ".join(BACKEND_FIELDS)))
        backends = []
        keys, addresses = {}, {}
        for m, backend in enumerate(declared):
            bwhere = "%s.backends[%d]" % (vwhere, m)
            if not isinstance(backend, dict):
                raise MaglevError("%s %r: expected a dict with fields %s" % (bwhere, backend, ", ".join(BACKEND_FIELDS)))
            check_fields(backend, bwhere, BACKEND_FIELDS)
            baddr = _ip(backend.get("address"), bwhere + ".address")
            mac = _mac(backend.get("mac", "00:00:00:00:00:00"), bwhere + ".mac")
            weight = _int(backend.get("weight", 1), bwhere + ".weight", 0, (1 << 31) - 1,
                          "an integer >= 0 (0 drains)")
            name = backend.get("name")
            if name is not None and (not isinstance(name, str) or not name):
                raise MaglevError("%s.name %r: expected a non-empty string (the Maglev permutation key)"
                                  % (bwhere, name))
            key = backend_key(backend)
            if key in keys:
                raise MaglevError("%s.name %r: expected names unique within a VIP (also backends[%d])"
                                  % (bwhere, key, keys[key]))
            if str(baddr) in addresses:
                raise MaglevError("%s.address %r: expected each address once per VIP (also backends[%d])"
                                  % (bwhere, str(baddr), addresses[str(baddr)]))
            keys[key] = addresses[str(baddr)] = m
            backends.append(Backend(key, weight, baddr, mac))
        out.append(Vip(ident, addr, port, proto, mode, backends))
    return out


def lb_entries(vips: list, ring_size: int = DEFAULT_RING_SIZE, backend_ids: dict = None,
               vip_ids: dict = None) -> dict:
    """Turn VIP declarations into the entries of xdp_lb's maps (operator notation, by BTF field name).

    vips: [{vip: 192.0.2.10, port: 443, proto: tcp, mode: dsr|ipip,
            backends: [{address: 198.51.100.1, mac: 02:..., weight: 1, name: optional}]}]
    backend_ids / vip_ids: the ids used by the running configuration ({key: id}); they are
    kept so that established flows (whose connection-table entries hold backend ids) and
    counters stay attached to the same backend / VIP. New ones take the lowest free id.
    (The ids live on the caller's side here; the lb_tables module reads them from the
    kernel instead, see plugins/module_utils/lb_tables.py.)

    Returns {"lb_vips_v4": [(key, value)], "lb_vips_v6": [...], "lb_backends": [(id, value)],
             "lb_ring": {row: [backend ids]}, "backend_ids": {...}, "vip_ids": {...}}.
    """
    backend_ids = dict(backend_ids or {})
    vip_ids = dict(vip_ids or {})
    seen_vips = set()
    seen_backends = {}
    plans = []
    for vip in validate_vips(vips):
        seen_vips.add(vip.ident)
        backends = []
        for be in vip.backends:
            record = (str(be.address), be.mac)
            if seen_backends.setdefault(be.key, record) != record:
                raise MaglevError("vips: backend %r declared with two different address/mac" % (be.key,))
            backends.append((be.key, be.weight, be.address, be.mac))
        plans.append((vip.ident, vip.address, vip.port, vip.proto, vip.mode, backends))

    def allocate(ids: dict, wanted) -> dict:
        kept = {k: v for k, v in ids.items() if k in wanted}
        used = set(kept.values())
        free = (i for i in range(1 << 31) if i not in used)
        for key in sorted(wanted):
            if key not in kept:
                kept[key] = next(free)
        return kept

    backend_ids = allocate(backend_ids, set(seen_backends))
    vip_ids = allocate(vip_ids, seen_vips)
    out = {"lb_vips_v4": [], "lb_vips_v6": [], "lb_backends": [], "lb_ring": {},
           "backend_ids": backend_ids, "vip_ids": vip_ids}
    for key in sorted(seen_backends, key=lambda k: backend_ids[k]):
        addr_text, mac = seen_backends[key]
        addr = ipaddress.ip_address(addr_text)
        value = {"family": "ipv%d" % addr.version, "mac": mac,
                 "addr4": str(addr) if addr.version == 4 else "0.0.0.0",
                 "addr6": str(addr) if addr.version == 6 else "::"}
        out["lb_backends"].append((backend_ids[key], value))
    for ident, addr, port, proto, mode, backends in plans:
        vid = vip_ids[ident]
        table = build_table([(entry[0], entry[1]) for entry in backends], ring_size)
        ids = [backend_ids[entry[0]] for entry in backends]
        out["lb_ring"][vid] = [BACKEND_NONE if i == BACKEND_NONE else ids[i] for i in table]
        mapname = "lb_vips_v%d" % addr.version
        out[mapname].append(({"vip": str(addr), "port": port, "proto": proto},
                             {"id": vid, "ring": vid, "mode": mode}))
    return out


def lb_config(ring_size: int = DEFAULT_RING_SIZE, udp_timeout_ms: int = 0, lb_mac: str = "00:00:00:00:00:00",
              tunnel_src_v4: str = "0.0.0.0/0", tunnel_src_v6: str = "::/0") -> dict:
    """The lb_config entry (key 0) in operator notation: ring size, UDP timeout, source MAC, tunnel sources.

    tunnel_src_v4 / _v6: prefixes the outer source of IPIP / IP6IP6 is taken from (host bits from the flow
    hash, so the backends' NICs spread flows over their queues); 0.0.0.0/0 or ::/0 means not configured.
    """
    if not is_prime(ring_size):
        raise MaglevError("ring_size %r: expected a prime number (e.g. 65537)" % (ring_size,))
    if not isinstance(udp_timeout_ms, int) or isinstance(udp_timeout_ms, bool) or not 0 <= udp_timeout_ms < 1 << 32:
        raise MaglevError("udp_timeout_ms %r: expected an integer 0..4294967295 (0: 30 s)" % (udp_timeout_ms,))
    nets = {}
    for field, value, version in (("tunnel_src_v4", tunnel_src_v4, 4), ("tunnel_src_v6", tunnel_src_v6, 6)):
        try:
            net = ipaddress.ip_network(str(value), strict=False)
        except ValueError:
            net = None
        if net is None or net.version != version:
            example = "203.0.113.0/24" if version == 4 else "2001:db8:7e::/96"
            raise MaglevError("%s %r: expected an IPv%d prefix like %s" % (field, value, version, example))
        nets[field] = str(net)
    return {"ring_size": ring_size, "udp_timeout_ms": udp_timeout_ms, "lb_mac": _mac(lb_mac, "lb_mac"), **nets}


def ring_entries(row: int, ids: list, ring_size: int):
    """(key, value) pairs of lb_ring for one VIP's ring row: key row * ring_size + slot."""
    if len(ids) != ring_size:
        raise MaglevError("ring row %d: expected %d backend ids, got %d" % (row, ring_size, len(ids)))
    base = row * ring_size
    return [(base + slot, backend) for slot, backend in enumerate(ids)]
