# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The XDP load balancer's map entries (bpf/xdp_lb.c), built from the operator's VIP declarations.

validate_vips checks a declaration (every field named in its errors); lb_entries turns it into the entries of
lb_vips_v4 / lb_vips_v6, lb_backends and lb_ring (the rings from maglev.build_table); lb_config is the lb_config
entry; ring_entries lays one VIP's ring row out as lb_ring keys. The maglev_entries filter and the lb_tables
module (xdp_lb_tables.py) both build their entries here.
"""

from __future__ import annotations

import ipaddress

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane.maglev import BACKEND_NONE, DEFAULT_RING_SIZE, MaglevError, build_table, is_prime

PROTOS = {"tcp": 6, "udp": 17}
MODES = ("dsr", "ipip")


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
        raise MaglevError("%s.%s %r: expected no such field; valid fields: %s" % (where, unknown[0], item[unknown[0]], ", ".join(allowed)))


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
        self.ident, self.address, self.port, self.proto, self.mode, self.backends = ident, address, port, proto, mode, backends


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
            raise MaglevError("%s.backends: missing; expected a list of {%s} (an empty list drops the VIP's new flows)" % (vwhere, ", ".join(BACKEND_FIELDS)))
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
            weight = _int(backend.get("weight", 1), bwhere + ".weight", 0, (1 << 31) - 1, "an integer >= 0 (0 drains)")
            name = backend.get("name")
            if name is not None and (not isinstance(name, str) or not name):
                raise MaglevError("%s.name %r: expected a non-empty string (the Maglev permutation key)" % (bwhere, name))
            key = backend_key(backend)
            if key in keys:
                raise MaglevError("%s.name %r: expected names unique within a VIP (also backends[%d])" % (bwhere, key, keys[key]))
            if str(baddr) in addresses:
                raise MaglevError("%s.address %r: expected each address once per VIP (also backends[%d])" % (bwhere, str(baddr), addresses[str(baddr)]))
            keys[key] = addresses[str(baddr)] = m
            backends.append(Backend(key, weight, baddr, mac))
        out.append(Vip(ident, addr, port, proto, mode, backends))
    return out


def lb_entries(vips: list, ring_size: int = DEFAULT_RING_SIZE, backend_ids: dict = None, vip_ids: dict = None) -> dict:
    """Turn VIP declarations into the entries of xdp_lb's maps (operator notation, by BTF field name).

    vips: [{vip: 192.0.2.10, port: 443, proto: tcp, mode: dsr|ipip,
            backends: [{address: 198.51.100.1, mac: 02:..., weight: 1, name: optional}]}]
    backend_ids / vip_ids: the ids used by the running configuration ({key: id}); they are
    kept so that established flows (whose connection-table entries hold backend ids) and
    counters stay attached to the same backend / VIP. New ones take the lowest free id.
    (The ids live on the caller's side here; the lb_tables module reads them from the
    kernel instead, see plugins/module_utils/dataplane/xdp_lb_tables.py.)

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
    out = {"lb_vips_v4": [], "lb_vips_v6": [], "lb_backends": [], "lb_ring": {}, "backend_ids": backend_ids, "vip_ids": vip_ids}
    for key in sorted(seen_backends, key=lambda k: backend_ids[k]):
        addr_text, mac = seen_backends[key]
        addr = ipaddress.ip_address(addr_text)
        value = {
            "family": "ipv%d" % addr.version,
            "mac": mac,
            "addr4": str(addr) if addr.version == 4 else "0.0.0.0",
            "addr6": str(addr) if addr.version == 6 else "::",
        }
        out["lb_backends"].append((backend_ids[key], value))
    for ident, addr, port, proto, mode, backends in plans:
        vid = vip_ids[ident]
        table = build_table([(entry[0], entry[1]) for entry in backends], ring_size)
        ids = [backend_ids[entry[0]] for entry in backends]
        out["lb_ring"][vid] = [BACKEND_NONE if i == BACKEND_NONE else ids[i] for i in table]
        mapname = "lb_vips_v%d" % addr.version
        out[mapname].append(({"vip": str(addr), "port": port, "proto": proto}, {"id": vid, "ring": vid, "mode": mode}))
    return out


def lb_config(
    ring_size: int = DEFAULT_RING_SIZE,
    udp_timeout_ms: int = 0,
    lb_mac: str = "00:00:00:00:00:00",
    tunnel_src_v4: str = "0.0.0.0/0",
    tunnel_src_v6: str = "::/0",
) -> dict:
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
