# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: xdp_filter_v4_entries
short_description: IPv4 source rules to the entries of xdp_filter's stride table
version_added: 0.1.0
author: ebpf.fleet contributors (@ebpf-fleet)
description:
  - Turns a list of IPv4 source rules (addresses and CIDRs, each with an action) into the entries of the
    C(filter_v4) map of C(bpf/xdp_filter.c), ready for M(ebpf.fleet.bpf_map) with O(ebpf.fleet.bpf_map#module:mode=sync).
  - The filter looks sources up in a stride table (/16, /24 and /32 blocks) instead of an LPM trie; each rule is
    expanded to the blocks it covers, the longest prefix winning where rules overlap (see docs/dataplane.md).
  - A bad rule fails with an error naming the rule's index, the field, the value and what was expected.
positional: _input
options:
  _input:
    description:
      - "The rules: a list of dicts C({cidr: 198.51.100.0/24, action: drop, rule_id: 7})."
      - C(cidr) is an IPv4 address or network; host bits set are an error (C(198.51.100.1/24)), as in M(ebpf.fleet.bpf_map).
      - "C(action) is V(pass) (allow list: skips the rate limit and the port rules), V(drop) or V(redirect)."
      - "C(rule_id) (0..4095, default 0) names the rule's counter in C(filter_rule_stats)."
      - C(redirect_slot) (0..63) is the C(filter_redirect) slot of a V(redirect) rule.
      - "C(mark) (optional; 1..4294967295, an integer or a string such as V(0x10); not with V(drop)): a packet
        this rule passes or redirects carries the mark in its XDP metadata, and the TC ingress hook of the
        interface (C(bpf/tc_ingress_mark.c), deployed by the role ebpf.fleet.tc_egress on
        C(tc_egress_ingress_interfaces)) sets it as C(skb->mark), which C(tc_egress) classifies by (its mark
        rules). The entry's rule then holds C(mark); without it the rule has none (0)."
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Deny and allow IPv4 sources on the filter
  ebpf.fleet.bpf_map:
    name: filter
    map: filter_v4
    mode: sync
    entries: "{{ rules | ebpf.fleet.xdp_filter_v4_entries }}"
  vars:
    rules:
      - {cidr: 198.51.100.0/24, action: drop, rule_id: 7}
      - {cidr: 198.51.100.128/25, action: pass, rule_id: 8}
      - {cidr: 203.0.113.0/24, action: pass, rule_id: 9, mark: 0x10}  # egress class of mark 0x10 (tc_egress)

# [{"key": "198.51.0.0/16", "value": {"flags": ["blocks", "deeper", "hosts"]}},
#  {"key": "198.51.100.0/24", "value": {"rule": {"action": "drop", "rule_id": 7, "redirect_slot": 0},
#   "flags": ["deeper", "match"]}}, 198.51.100.128/32 ... 198.51.100.255/32 with rule 8 and flags [match]]
"""

RETURN = r"""
_value:
  description:
    - "The C(filter_v4) entries in M(ebpf.fleet.bpf_map) notation: C({key: <block CIDR>, value: {rule: {action,
      rule_id, redirect_slot}, flags: [match, deeper]}}), sorted by level and address; the rule of an item with a
      C(mark) also holds C(mark) (a number)."
    - A block that only leads to longer blocks has no C(rule) (all zero) and the flag C(deeper) alone.
    - "A /16 block with C(deeper) also has the flag C(hosts) when /32 entries are below it and C(blocks) when /24
      entries with a rule are; with only one of the two the filter goes straight to that level (an exact address:
      two lookups instead of three)."
  type: list
  elements: dict
"""

import ipaddress

from ansible.errors import AnsibleFilterError

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import xdp_filter_tables
from ansible_collections.ebpf.fleet.plugins.plugin_utils import filter_rules

FIELDS = ("cidr", "action", "rule_id", "redirect_slot", "mark")


def xdp_filter_v4_entries(rules):
    """[{cidr, action, rule_id, redirect_slot, mark}] -> filter_v4 bpf_map entries."""
    by_cidr = {}
    for n, item in enumerate(filter_rules.items_of(rules, "IPv4 source rules {cidr, action, rule_id}")):
        where = "rules[%d]" % n
        filter_rules.check_fields(item, where, FIELDS)
        text = item.get("cidr")
        if not isinstance(text, str):
            filter_rules.fail(where, "cidr", text, "an IPv4 address or CIDR such as 198.51.100.0/24")
        try:
            net = ipaddress.IPv4Network(text.strip())
        except ValueError as exc:
            expected = "an IPv4 address or CIDR such as 198.51.100.0/24"
            if "host bits" in str(exc):
                expected = "the network address, %s (host bits are set)" % ipaddress.IPv4Network(text.strip(), strict=False)
            filter_rules.fail(where, "cidr", text, expected)
        rule = filter_rules.rule(item, where)
        key = str(net)
        if key in by_cidr:
            filter_rules.fail(where, "cidr", text, "each CIDR once (also in rules[%d])" % by_cidr[key][0])
        by_cidr[key] = (n, rule)
    try:
        entries = xdp_filter_tables.expand_v4({key: rule for key, (_n, rule) in by_cidr.items()})
    except xdp_filter_tables.FilterTableError as exc:
        raise AnsibleFilterError("xdp_filter_v4_entries: %s" % exc) from None
    for entry in entries:
        if entry["value"]["rule"] is None:
            # only leads to longer blocks: no rule of its own (an all-zero member)
            del entry["value"]["rule"]
    return entries


class FilterModule:
    """ebpf.fleet.xdp_filter_v4_entries"""

    def filters(self):
        return {"xdp_filter_v4_entries": xdp_filter_v4_entries}
