# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn the operator's tc_egress settings into the program's map entries.

tc_egress keeps its per-packet path free of divisions and of hash lookups
where an array can answer, so a few of its map values are derived from what
the operator writes:

* a class (``egress_classes``) is written with ``rate_bps`` (bytes per second)
  and ``burst_bytes``; :func:`class_value` adds ``ns_per_byte`` (32.32 fixed
  point), ``burst_ns`` and the two ``derived_*`` copies that tell the program
  they are current. A writer that leaves them out still works: the program
  recomputes them, with the same arithmetic, on the class's next packet;
* marks (``{mark: class id}``) go to the array ``egress_mark_classes`` when
  they are below ``MARKS_DIRECT`` and to the hash ``egress_marks`` otherwise
  (:func:`mark_entries`);
* IPv4 destination rules are expanded into xdp_filter_tables' stride table, whose
  /16 level goes to the array ``egress_dst_v4_16`` (indexed by the first 16
  bits of the address), its /24 level to the hash ``egress_dst_v4_24`` with a
  bitmap of the addresses below that have a /32 entry, and its /32 level to
  the hash ``egress_dst_v4_32`` (:func:`split_v4`).

    value = class_value({"action": "pass", "limit": "drop", "rate_bps": 125000, "burst_bytes": 3000})
"""

from __future__ import annotations

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import xdp_filter_tables
from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError

NSEC = 1_000_000_000
MARKS_DIRECT = 65536  # FLEET_EGRESS_MARKS_DIRECT in bpf/include/fleet/egress.h
CLASS_IDS = 64  # FLEET_EGRESS_CLASSES
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1


class EgressTableError(FleetError, ValueError):
    """A setting the program cannot hold (names the field, the value and what was expected)."""


def fp_ns(count: int, ns_per_byte: int) -> int:
    """ns that `count` bytes take at a 32.32 fixed-point rate: fleet_egress_ns() in tc_egress.c, bit for bit."""
    return ((count * (ns_per_byte >> 32)) + ((count * (ns_per_byte & _U32)) >> 32)) & _U64


def class_value(fields: dict) -> dict:
    """The egress_classes value for a class written as the operator writes it, with the derived fields set."""
    out = dict(fields)
    for name in ("rate_bps", "burst_bytes", "horizon_ns"):
        value = out.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64:
            raise EgressTableError("%s: %r is not an integer from 0 to 2^64-1" % (name, value))
    rate, burst = out.get("rate_bps", 0), out.get("burst_bytes", 0)
    if out.get("limit", "none") not in ("none", 0) and not rate:
        raise EgressTableError("rate_bps: a class with limit %r needs a rate in bytes per second above 0, got %r" % (out["limit"], rate))
    if rate:
        ns_per_byte = (NSEC << 32) // rate
        out.update(ns_per_byte=ns_per_byte, burst_ns=fp_ns(min(burst, _U32), ns_per_byte), derived_rate_bps=rate, derived_burst_bytes=burst)
    else:
        out.update(ns_per_byte=0, burst_ns=0, derived_rate_bps=0, derived_burst_bytes=0)
    return out


def _class_id(what, class_id) -> int:
    if isinstance(class_id, bool) or not isinstance(class_id, int) or not 0 <= class_id < CLASS_IDS:
        raise EgressTableError("%s: class %r is not an integer from 0 to %d" % (what, class_id, CLASS_IDS - 1))
    return class_id


def mark_entries(marks: dict) -> tuple:
    """({mark: {"class_id": c, "set": 1}} for egress_mark_classes, {mark: {"class_id": c}} for egress_marks)."""
    direct, wide = {}, {}
    for mark, class_id in marks.items():
        if isinstance(mark, bool) or not isinstance(mark, int) or not 0 < mark <= _U32:
            raise EgressTableError("mark %r: expected an integer from 1 to 2^32-1 (0 means no mark)" % (mark,))
        class_id = _class_id("mark %#x" % mark, class_id)
        if mark < MARKS_DIRECT:
            direct[mark] = {"class_id": class_id, "set": 1}
        else:
            wide[mark] = {"class_id": class_id}
    return direct, wide


def split_v4(table: dict) -> tuple:
    """Split a xdp_filter_tables.expand_v4_raw() table by level, as tc_egress reads it.

    Returns ({first 16 bits: (rule, flags)} for egress_dst_v4_16,
    {/24 network: (rule, flags, hosts)} for egress_dst_v4_24, where hosts is the
    four 64-bit words of the bitmap of the /24's addresses that have a /32 entry,
    and {address: rule} for egress_dst_v4_32); networks and addresses as integers."""
    level16, level24, level32 = {}, {}, {}
    for (level, network), (rule, flags) in table.items():
        if level == 16:
            level16[network >> 16] = (rule, flags)
        elif level == 24:
            level24[network] = (rule, flags, [0, 0, 0, 0])
        elif rule is not None:
            level32[network] = rule
    for address in level32:
        parent = address & 0xFFFFFF00
        if parent not in level24:
            raise EgressTableError("%s/32 has no /24 entry above it in the stride table" % _dotted(address))
        host = address & 0xFF
        level24[parent][2][host >> 6] |= 1 << (host & 63)
    return level16, level24, level32


def _dotted(address: int) -> str:
    return ".".join(str((address >> shift) & 0xFF) for shift in (24, 16, 8, 0))


def expand_v4(rules: dict) -> tuple:
    """split_v4() of the stride expansion of {CIDR or address: rule}."""
    return split_v4(xdp_filter_tables.expand_v4_raw(rules))


def lookup_v4(tables: tuple, address: int):
    """What tc_egress finds for an IPv4 address (an integer) in split_v4() tables: the same walk as
    fleet_egress_dst_v4() (for tests and dry runs)."""
    level16, level24, level32 = tables
    best = None
    entry = level16.get(address >> 16)
    if entry is None:
        return None
    if xdp_filter_tables.FLAG_MATCH in entry[1]:
        best = entry[0]
    if xdp_filter_tables.FLAG_DEEPER not in entry[1]:
        return best
    entry = level24.get(address & 0xFFFFFF00)
    if entry is None:
        return best
    if xdp_filter_tables.FLAG_MATCH in entry[1]:
        best = entry[0]
    host = address & 0xFF
    if not (entry[2][host >> 6] >> (host & 63)) & 1:
        return best
    return level32.get(address, best)
