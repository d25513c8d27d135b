# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn the operator's IPv4 source rules (addresses and CIDRs) into xdp_filter's stride table.

xdp_filter looks IPv4 sources up in one hash map (``filter_v4``) in at most
three steps instead of walking an LPM trie: the /16 block of the address, then
its /24 block, then the address itself. Every rule is expanded to the next
level at or below its prefix length (a /12 becomes sixteen /16 entries, a /20
sixteen /24 entries, a /27 thirty-two /32 entries), the longest prefix winning
where expansions overlap. An entry carries the rule that covers its whole
block (flag ``match``) and says whether longer entries exist below it (flag
``deeper``), so a lookup stops at the first level with nothing below. A /16
entry with ``deeper`` also says what is below it: ``hosts`` (/32 entries),
``blocks`` (/24 entries with a rule). With only one of the two the filter goes
from the /16 entry straight to that level, so an exact address under a /16
without /24 rules costs two lookups, not three.

Keys are written as CIDRs (``fleet_lpm_v4``), values as
``{"rule": <the rule>, "flags": ["match", "deeper", "hosts", "blocks"]}``,
which is the notation the bpf_map module writes through the map's BTF.

    entries = expand_v4({"198.51.100.0/24": {"action": "drop", "rule_id": 1},
                         "198.51.100.3": {"action": "pass", "rule_id": 2}})
"""

from __future__ import annotations

import ipaddress

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError

LEVELS = (16, 24, 32)
FLAG_MATCH = "match"
FLAG_DEEPER = "deeper"
FLAG_HOSTS = "hosts"  # on a /16 entry: /32 entries below
FLAG_BLOCKS = "blocks"  # on a /16 entry: /24 entries with a rule below


class FilterTableError(FleetError, ValueError):
    """A rule the table cannot hold (names the rule and what was expected)."""


def _level(prefixlen: int) -> int:
    for level in LEVELS:
        if prefixlen <= level:
            return level
    raise FilterTableError("prefix length %d is longer than 32" % prefixlen)


def expand_v4_raw(rules: dict) -> dict:
    """{(level, int network): [rule or None, set of flags]} for rules keyed by address or CIDR."""
    parsed = []
    for text, rule in rules.items():
        try:
            net = ipaddress.IPv4Network(str(text), strict=False)
        except ValueError as exc:
            raise FilterTableError("source %r: expected an IPv4 address or CIDR (%s)" % (text, exc)) from None
        parsed.append((net.prefixlen, int(net.network_address), rule))
    return expand_v4_parsed(parsed)


def expand_v4_parsed(parsed: list) -> dict:
    """expand_v4_raw() for rules already parsed: [(prefixlen, int network, rule)] (a million-line file parses
    faster without ipaddress)."""
    # shortest first: a longer prefix overwrites the blocks it shares with a shorter one
    parsed.sort(key=lambda item: item[0])
    table = {}
    for prefixlen, base, rule in parsed:
        level = _level(prefixlen)
        step = 1 << (32 - level)
        for block in range(base, base + (1 << (32 - prefixlen)), step):
            entry = table.setdefault((level, block), [None, set()])
            entry[0] = rule
            entry[1].add(FLAG_MATCH)
    for level, parent in ((32, 24), (24, 16)):
        mask = (0xFFFFFFFF << (32 - parent)) & 0xFFFFFFFF
        for _lvl, block in [key for key in table if key[0] == level]:
            entry = table.setdefault((parent, block & mask), [None, set()])
            entry[1].add(FLAG_DEEPER)
    return table


def below_flags_v4(table: dict) -> dict:
    """{int /16 network: {"hosts", "blocks"} or part} for an expand_v4_raw() table: what its /16 entries say is
    below them (/32 entries; /24 entries with a rule)."""
    below = {}
    for (level, block), (_rule, flags) in table.items():
        if level == 32:
            below.setdefault(block & 0xFFFF0000, set()).add(FLAG_HOSTS)
        elif level == 24 and FLAG_MATCH in flags:
            below.setdefault(block & 0xFFFF0000, set()).add(FLAG_BLOCKS)
    return below


def expand_v4(rules: dict) -> list:
    """The table as bpf_map entries: [{"key": "198.51.0.0/16", "value": {"rule": ..., "flags": [...]}}], a /16
    entry's flags with what is below it (below_flags_v4)."""
    table = expand_v4_raw(rules)
    below = below_flags_v4(table)
    out = []
    for (level, block), (rule, flags) in sorted(table.items()):
        if level == 16:
            flags = flags | below.get(block, set())
        out.append({"key": "%s/%d" % (ipaddress.IPv4Address(block), level), "value": {"rule": rule, "flags": sorted(flags)}})
    return out


def lookup_v4(table: dict, address: str, below: dict = None):
    """What xdp_filter finds for address in an expand_v4_raw() table, walked as the program walks it (for tests and
    dry runs); below: the /16 entries' extra flags (below_flags_v4(table) when not given; {}: a table without them)."""
    if below is None:
        below = below_flags_v4(table)
    addr = int(ipaddress.IPv4Address(address))
    top = table.get((16, addr & 0xFFFF0000))
    if top is None:
        return None
    best = top[0] if FLAG_MATCH in top[1] else None
    if FLAG_DEEPER not in top[1]:
        return best
    only = below.get(addr & 0xFFFF0000, set())
    levels = {frozenset({FLAG_HOSTS}): (32,), frozenset({FLAG_BLOCKS}): (24,)}.get(frozenset(only))
    if levels is not None:  # straight to the one level below that can hold the answer
        entry = table.get((levels[0], addr & ((0xFFFFFFFF << (32 - levels[0])) & 0xFFFFFFFF)))
        return entry[0] if entry is not None and FLAG_MATCH in entry[1] else best
    for level in (24, 32):
        entry = table.get((level, addr & ((0xFFFFFFFF << (32 - level)) & 0xFFFFFFFF)))
        if entry is None:
            break
        if FLAG_MATCH in entry[1]:
            best = entry[0]
        if FLAG_DEEPER not in entry[1]:
            break
    return best
