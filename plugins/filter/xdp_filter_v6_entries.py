# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: xdp_filter_v6_entries
short_description: IPv6 source rules to the entries of xdp_filter's IPv6 source maps
version_added: 0.1.0
author: ebpf.fleet contributors (@ebpf-fleet)
description:
  - Turns a list of IPv6 source rules (addresses and CIDRs, each with an action) into the entries of the two IPv6
    source maps of C(bpf/xdp_filter.c), ready for M(ebpf.fleet.bpf_map) with O(ebpf.fleet.bpf_map#module:mode=sync).
  - The filter looks an IPv6 source up in the exact hash C(filter_src_v6) first, then in the LPM trie
    C(filter_pfx_v6) (both are the inner map of a one-slot map of maps, swapped whole by M(ebpf.fleet.bpf_map)).
    An address (or a C(/128)) goes to the hash, a shorter prefix to the trie; the trie gives the longest match.
  - A bad rule fails with an error naming the rule's index, the field, the value and what was expected.
positional: _input
options:
  _input:
    description:
      - "The rules: a list of dicts C({cidr: 2001:db8:1::/48, action: drop, rule_id: 7})."
      - C(cidr) is an IPv6 address or network; host bits set are an error (C(2001:db8::1/32)), as in M(ebpf.fleet.bpf_map).
      - "C(action) is V(pass) (allow list: skips the rate limit and the port rules), V(drop) or V(redirect)."
      - "C(rule_id) (0..4095, default 0) names the rule's counter in C(filter_rule_stats)."
      - C(redirect_slot) (0..63) is the C(filter_redirect) slot of a V(redirect) rule.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Deny and allow IPv6 sources on the filter
  ebpf.fleet.bpf_map:
    name: filter
    map: "{{ item.key }}"
    mode: sync
    entries: "{{ item.value }}"
  loop: "{{ rules | ebpf.fleet.xdp_filter_v6_entries | dict2items }}"
  vars:
    rules:
      - {cidr: "2001:db8:66::/48", action: drop, rule_id: 7}
      - {cidr: "2001:db8:66::10", action: pass, rule_id: 8}

# {"filter_src_v6": [{"key": "2001:db8:66::10", "value": {"action": "pass", "rule_id": 8, "redirect_slot": 0}}],
#  "filter_pfx_v6": [{"key": "2001:db8:66::/48", "value": {"action": "drop", "rule_id": 7, "redirect_slot": 0}}]}
"""

RETURN = r"""
_value:
  description:
    - "A dict of both maps' entries in M(ebpf.fleet.bpf_map) notation: C(filter_src_v6) (exact addresses,
      C({key: <address>, value: <rule>})) and C(filter_pfx_v6) (prefixes, C({key: <CIDR>, value: <rule>})),
      each sorted by address and prefix length; both keys are always there, so a sync also empties a map."
    - A rule is C({action, rule_id, redirect_slot}).
  type: dict
"""

import ipaddress

from ansible_collections.ebpf.fleet.plugins.plugin_utils import filter_rules

FIELDS = ("cidr", "action", "rule_id", "redirect_slot")
EXPECTED = "an IPv6 address or CIDR such as 2001:db8::/32"


def xdp_filter_v6_entries(rules):
    """[{cidr, action, rule_id, redirect_slot}] -> {filter_src_v6: entries, filter_pfx_v6: entries}."""
    by_net = {}
    for n, item in enumerate(filter_rules.items_of(rules, "IPv6 source rules {cidr, action, rule_id}")):
        where = "rules[%d]" % n
        filter_rules.check_fields(item, where, FIELDS)
        text = item.get("cidr")
        if not isinstance(text, str):
            filter_rules.fail(where, "cidr", text, EXPECTED)
        try:
            net = ipaddress.IPv6Network(text.strip())
        except ValueError as exc:
            expected = EXPECTED
            if "host bits" in str(exc):
                expected = "the network address, %s (host bits are set)" % ipaddress.IPv6Network(text.strip(), strict=False)
            filter_rules.fail(where, "cidr", text, expected)
        rule = filter_rules.rule(item, where)
        if net in by_net:
            filter_rules.fail(where, "cidr", text, "each CIDR once (also in rules[%d])" % by_net[net][0])
        by_net[net] = (n, rule)
    exact, prefixes = [], []
    for net in sorted(by_net, key=lambda net: (int(net.network_address), net.prefixlen)):
        rule = by_net[net][1]
        if net.prefixlen == 128:
            exact.append({"key": str(net.network_address), "value": rule})
        else:
            prefixes.append({"key": str(net), "value": rule})
    return {"filter_src_v6": exact, "filter_pfx_v6": prefixes}


class FilterModule:
    """ebpf.fleet.xdp_filter_v6_entries"""

    def filters(self):
        return {"xdp_filter_v6_entries": xdp_filter_v6_entries}
