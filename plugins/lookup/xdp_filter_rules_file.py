# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: xdp_filter_rules_file
short_description: A CIDR list file on the controller to entry files for xdp_filter's source maps
version_added: 0.1.0
author: ebpf.fleet contributors (@ebpf-fleet)
description:
  - Reads a file of source rules on the controller, one per line, C(CIDR [action] [rule_id]) (for example
    C(198.51.100.0/24 drop 7); the action defaults to O(action), the rule id to O(rule_id)); C(#) starts a comment,
    blank lines are skipped. A file of a million lines is read as a stream, without Jinja.
  - Merges the inline O(rules), turns the whole set into the entries of the filter's maps (IPv4 - the stride table
    C(filter_v4), as P(ebpf.fleet.xdp_filter_v4_entries#filter); IPv6 - C(filter_src_v6) and C(filter_pfx_v6), as
    P(ebpf.fleet.xdp_filter_v6_entries#filter)) and writes them as JSON files into O(dest), for
    M(ebpf.fleet.bpf_map)'s C(entries_src) (one file transfer instead of a million task arguments).
  - The files are named by a digest of their inputs, so an unchanged file is not converted again; the folder holds
    one set per distinct input and may be emptied at any time.
  - A bad line fails with the file, the line number, the value and what was expected; a CIDR given twice names
    both places.
  - Also lists, like P(ebpf.fleet.xdp_filter_failsafe#filter), the rules that would drop or redirect a management
    source (O(mgmt)).
options:
  _terms:
    description: The rules file (a path on the controller; a relative path is looked up like C(files/)).
    required: true
    type: list
    elements: path
  family:
    description: V(v4) or V(v6); every line must be of that family.
    type: str
    required: true
    choices: [v4, v6]
  action:
    description: The action of a line that gives none (V(pass) or V(drop)).
    type: str
    default: drop
    choices: [pass, drop]
  rule_id:
    description: The rule id (counter) of a line that gives none, 0..4095.
    type: int
    default: 0
  rules:
    description: Inline rules (C({cidr, action, rule_id, redirect_slot})) to merge with the file's.
    type: list
    elements: dict
    default: []
  mgmt:
    description: Management sources (CIDRs) of the family, for the fail-safe check.
    type: list
    elements: str
    default: []
  dest:
    description: The folder on the controller for the entry files (created when missing).
    type: path
    required: true
  name:
    description: How the messages name the file's variable.
    type: str
    default: the rules file
"""

EXAMPLES = r"""
- name: Deny a million IPv4 sources listed in files/deny_v4.txt
  ebpf.fleet.bpf_map:
    name: filter
    map: filter_v4
    mode: sync
    entries_src: "{{ converted.maps.filter_v4 }}"
  vars:
    converted: "{{ lookup('ebpf.fleet.xdp_filter_rules_file', 'deny_v4.txt', family='v4', dest='/tmp/xdp_filter') }}"
"""

RETURN = r"""
_raw:
  description: One dict per file.
  type: list
  elements: dict
  contains:
    maps:
      description: "The entry file of each map, C({filter_v4: <path>}) or C({filter_src_v6: <path>, filter_pfx_v6: <path>})."
      type: dict
    rules:
      description: How many rules (file and inline).
      type: int
    entries:
      description: How many entries each map gets.
      type: dict
    lockout:
      description: The rules that would drop or redirect a management source (empty when none).
      type: list
      elements: str
"""

import hashlib
import ipaddress
import json
import os
import socket
import tempfile

from ansible.errors import AnsibleLookupError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.lookup import LookupBase

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import xdp_filter_tables
from ansible_collections.ebpf.fleet.plugins.plugin_utils import filter_rules

VERSION = "1"  # part of the digest: a change of the output format changes the files' names
ACTIONS = ("pass", "drop")
FIELDS = ("cidr", "action", "rule_id", "redirect_slot")
# a stride entry's flags as JSON, by (deeper, match)
FLAGS_JSON = {}  # frozenset of flag names -> their JSON list (a handful of combinations over millions of lines)


def _parse_v4(text: str):
    """(prefixlen, int network) of an IPv4 address or CIDR; ValueError names what is wrong."""
    addr, _sep, length = text.partition("/")
    try:
        base = int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
    except OSError:
        raise ValueError("an IPv4 address or CIDR such as 198.51.100.0/24") from None
    prefixlen = 32
    if _sep:
        if not length.isdigit() or int(length) > 32:
            raise ValueError("an IPv4 address or CIDR such as 198.51.100.0/24")
        prefixlen = int(length)
    mask = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF
    if base & ~mask & 0xFFFFFFFF:
        raise ValueError("the network address, %s/%d (host bits are set)" % (socket.inet_ntop(socket.AF_INET, (base & mask).to_bytes(4, "big")), prefixlen))
    return prefixlen, base


def _parse_v6(text: str):
    try:
        net = ipaddress.IPv6Network(text)
    except ValueError as exc:
        if "host bits" in str(exc):
            raise ValueError("the network address, %s (host bits are set)" % ipaddress.IPv6Network(text, strict=False)) from None
        raise ValueError("an IPv6 address or CIDR such as 2001:db8::/32") from None
    return net.prefixlen, int(net.network_address)


class Converter:
    """Collects the rules of one family: {(prefixlen, network): (where, rule)}."""

    def __init__(self, family: str, mgmt: list):
        self.family = family
        self.parse = _parse_v4 if family == "v4" else _parse_v6
        self.rules = {}
        self.bits = 32 if family == "v4" else 128
        self.mgmt = [
            (net, (net.prefixlen, int(net.network_address))) for net in filter_rules.management_networks(mgmt, "mgmt") if net.max_prefixlen == self.bits
        ]
        self.lockout = []
        self.name, self.path = "", ""
        self._rule_json = {}  # id(rule) -> its JSON (rules are shared; self.rules keeps them alive)

    def add(self, where, text: str, rule: dict, shown: str):
        """One rule; where is a place ("xdp_filter_v4_rules[0].cidr") or a line number of the file (kept as a
        number: a million places are formatted only when one is shown)."""
        try:
            key = self.parse(text)
        except ValueError as exc:
            raise AnsibleLookupError("%s %s: expected %s" % (self.place(where), filter_rules.show(text), exc)) from None
        if key in self.rules:
            raise AnsibleLookupError(
                "%s %s: expected each CIDR once (also in %s)" % (self.place(where), filter_rules.show(text), self.place(self.rules[key][0]))
            )
        self.rules[key] = (where, rule)
        if self.mgmt and rule["action"] in filter_rules.BLOCKING:
            for mgmt, (mlen, mbase) in self.mgmt:
                shorter = mlen if mlen < key[0] else key[0]
                mask = ((1 << self.bits) - 1) ^ ((1 << (self.bits - shorter)) - 1)
                if (key[1] & mask) == (mbase & mask):
                    if len(self.lockout) < 20:
                        self.lockout.append("%s %s would %s the management source %s" % (self.place(where), shown, rule["action"], mgmt))
                    break

    def place(self, where) -> str:
        return "%s %s line %d" % (self.name, self.path, where) if isinstance(where, int) else where

    def read_file(self, path: str, name: str, action: str, rule_id: int):
        self.name, self.path = name, path
        shared = {}
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                text = line.split("#", 1)[0].strip()
                if not text:
                    continue
                parts = text.split()
                if len(parts) > 3:
                    raise AnsibleLookupError("%s %s: expected CIDR [action] [rule_id]" % (self.place(number), filter_rules.show(text)))
                line_action = parts[1] if len(parts) > 1 else action
                if line_action not in ACTIONS:
                    raise AnsibleLookupError("%s: action %s: expected one of %s" % (self.place(number), filter_rules.show(line_action), ", ".join(ACTIONS)))
                line_id = rule_id
                if len(parts) > 2:
                    if not parts[2].isdigit() or int(parts[2]) > filter_rules.RULE_ID_MAX:
                        raise AnsibleLookupError(
                            "%s: rule_id %s: expected an integer 0..%d" % (self.place(number), filter_rules.show(parts[2]), filter_rules.RULE_ID_MAX)
                        )
                    line_id = int(parts[2])
                rule = shared.get((line_action, line_id))
                if rule is None:  # one dict per distinct rule, not per line
                    rule = shared[(line_action, line_id)] = {"action": line_action, "rule_id": line_id, "redirect_slot": 0}
                self.add(number, parts[0], rule, text)

    def add_inline(self, rules: list, name: str):
        for n, item in enumerate(filter_rules.items_of(rules, "source rules {cidr, action, rule_id}", name)):
            where = "%s[%d]" % (name, n)
            filter_rules.check_fields(item, where, FIELDS)
            text = item.get("cidr")
            if not isinstance(text, str):
                filter_rules.fail(where, "cidr", text, "an IP%s address or CIDR" % self.family)
            self.add(where + ".cidr", text.strip(), filter_rules.rule(item, where), filter_rules.describe_rule(item))

    def write(self, dest: str, digest: str) -> dict:
        """Write the entry files (unless they exist); {map: (path, count)}."""
        names = ("filter_v4",) if self.family == "v4" else ("filter_src_v6", "filter_pfx_v6")
        paths = {name: os.path.join(dest, "xdp_filter-%s-%s.%s.json" % (self.family, digest[:24], name)) for name in names}
        counts = {name: paths[name] + ".count" for name in names}
        if all(os.path.exists(paths[name]) and os.path.exists(counts[name]) for name in names):
            # converted before from the same input: the files and their entry counts are reused
            out = {}
            for name in names:
                with open(counts[name], encoding="utf-8") as handle:
                    out[name] = (paths[name], int(handle.read().strip() or 0))
            return out
        if self.family == "v4":
            parsed = [(prefixlen, base, rule) for (prefixlen, base), (_where, rule) in self.rules.items()]
            table = xdp_filter_tables.expand_v4_parsed(parsed)
            below = xdp_filter_tables.below_flags_v4(table)  # a /16 entry's "hosts" and "blocks"
            lines = []
            for (level, block), (rule, flags) in sorted(table.items()):
                lines.append(self._stride_line(level, block, rule, flags | below.get(block, set()) if level == 16 else flags))
            maps = {"filter_v4": lines}
        else:
            exact, prefixes = [], []
            for (prefixlen, base), (_where, rule) in sorted(self.rules.items(), key=lambda item: (item[0][1], item[0][0])):
                addr = str(ipaddress.IPv6Address(base))
                if prefixlen == 128:
                    exact.append(json.dumps({"key": addr, "value": rule}))
                else:
                    prefixes.append(json.dumps({"key": "%s/%d" % (addr, prefixlen), "value": rule}))
            maps = {"filter_src_v6": exact, "filter_pfx_v6": prefixes}
        out = {}
        for name, lines in maps.items():
            _write_atomic(dest, paths[name], "[\n" + ",\n".join(lines) + "\n]\n")
            _write_atomic(dest, counts[name], "%d\n" % len(lines))  # last: it marks the entry file complete
            out[name] = (paths[name], len(lines))
        return out

    def _stride_line(self, level: int, block: int, rule, flags) -> str:
        key = "%s/%d" % (socket.inet_ntop(socket.AF_INET, block.to_bytes(4, "big")), level)
        flags_json = FLAGS_JSON.get(frozenset(flags))
        if flags_json is None:
            flags_json = FLAGS_JSON[frozenset(flags)] = json.dumps(sorted(flags))
        if rule is None:
            return '{"key": "%s", "value": {"flags": %s}}' % (key, flags_json)
        rule_json = self._rule_json.get(id(rule))
        if rule_json is None:
            rule_json = self._rule_json[id(rule)] = json.dumps(rule)
        return '{"key": "%s", "value": {"flags": %s, "rule": %s}}' % (key, flags_json, rule_json)


def _write_atomic(folder: str, path: str, text: str) -> None:
    """Write path through a temporary file and a rename (hosts converting the same input share the file)."""
    handle = tempfile.NamedTemporaryFile("w", dir=folder, prefix=".xdp_filter-", suffix=".tmp", delete=False, encoding="utf-8")
    try:
        with handle:
            handle.write(text)
        os.replace(handle.name, path)
    except BaseException:
        os.unlink(handle.name)
        raise


def convert(path: str, family: str, dest: str, action: str = "drop", rule_id: int = 0, rules=None, mgmt=None, name: str = "the rules file") -> dict:
    """The lookup's work for one file (callable without Ansible's plugin loader, for tests)."""
    inline = rules or []
    digest = hashlib.sha256()
    for part in (VERSION, family, action, str(rule_id), json.dumps(inline, sort_keys=True, default=str)):
        digest.update(part.encode() + b"\0")
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        converter = Converter(family, mgmt or [])
        converter.add_inline(inline, "xdp_filter_%s_rules" % family)
        converter.read_file(path, name, action, rule_id)
        os.makedirs(dest, mode=0o700, exist_ok=True)
        written = converter.write(dest, digest.hexdigest())
    except OSError as exc:
        raise AnsibleLookupError("%s %s: %s" % (name, path, exc)) from None
    return {
        "maps": {map_name: item[0] for map_name, item in written.items()},
        "entries": {map_name: item[1] for map_name, item in written.items()},
        "rules": len(converter.rules),
        "lockout": converter.lockout,
        "file": path,
    }


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        family = self.get_option("family")
        dest = os.path.expanduser(self.get_option("dest"))
        name = self.get_option("name")
        results = []
        for term in terms:
            path = self.find_file_in_search_path(variables, "files", term)
            if path is None:
                raise AnsibleLookupError("%s %s: not found on the controller" % (name, term))
            results.append(
                convert(
                    to_native(path),
                    family,
                    dest,
                    self.get_option("action"),
                    self.get_option("rule_id"),
                    self.get_option("rules"),
                    self.get_option("mgmt"),
                    name,
                )
            )
        return results
