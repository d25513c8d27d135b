# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: xdp_filter_port_entries
short_description: Destination port rules to the entries of xdp_filter's port table
version_added: 0.1.0
author: ebpf.fleet contributors (@ebpf-fleet)
description:
  - Turns a list of destination port rules into the entries of the C(filter_ports) map of C(bpf/xdp_filter.c)
    (an array indexed by the port, one rule per protocol in each element), for M(ebpf.fleet.bpf_map).
  - Rules for several protocols on one port become one element, with their protocols in its C(set) flags.
  - A bad rule fails with an error naming the rule's index, the field, the value and what was expected.
positional: _input
options:
  _input:
    description:
      - "The rules: a list of dicts C({proto: tcp, port: 80, action: pass, rule_id: 10})."
      - "C(proto) is V(tcp), V(udp), V(icmp) or V(icmpv6); for ICMP and ICMPv6 C(port) is the message type
        (C({proto: icmp, port: 8, action: drop}) drops echo requests)."
      - C(action) is V(pass), V(drop) or V(redirect); C(rule_id) (0..4095, default 0) names the rule's counter;
        C(redirect_slot) (0..63) the C(filter_redirect) slot of a V(redirect) rule.
      - "C(mark) (optional; 1..4294967295, an integer or a string such as V(0x10); not with V(drop)): a packet
        this rule passes or redirects carries the mark to the interface's TC ingress hook, which sets it as
        C(skb->mark) for C(tc_egress)'s mark rules (see P(ebpf.fleet.xdp_filter_v4_entries#filter))."
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Pass TCP/80, drop UDP/53
  ebpf.fleet.bpf_map:
    name: filter
    map: filter_ports
    mode: sync
    entries: "{{ rules | ebpf.fleet.xdp_filter_port_entries }}"
  vars:
    rules:
      - {proto: tcp, port: 80, action: pass, rule_id: 10}
      - {proto: udp, port: 53, action: drop, rule_id: 11}
      - {proto: udp, port: 5004, action: pass, rule_id: 12, mark: 0x20}  # egress class of mark 0x20

# [{"key": 53, "value": {"udp": {"action": "drop", "rule_id": 11, "redirect_slot": 0}, "set": ["udp"]}},
#  {"key": 80, "value": {"tcp": {"action": "pass", "rule_id": 10, "redirect_slot": 0}, "set": ["tcp"]}}]
"""

RETURN = r"""
_value:
  description:
    - "The C(filter_ports) entries in M(ebpf.fleet.bpf_map) notation, sorted by port: C({key: <port>, value:
      {tcp: <rule>, udp: <rule>, icmp: <rule>, icmpv6: <rule>, set: [<protocols>]}}), only the protocols given;
      a rule C({action, rule_id, redirect_slot}), with C(mark) when the item has one."
  type: list
  elements: dict
"""

from ansible_collections.ebpf.fleet.plugins.plugin_utils import filter_rules

FIELDS = ("proto", "port", "action", "rule_id", "redirect_slot", "mark")
PROTOS = ("tcp", "udp", "icmp", "icmpv6")


def xdp_filter_port_entries(rules):
    """[{proto, port, action, rule_id, redirect_slot, mark}] -> filter_ports bpf_map entries."""
    by_port = {}
    seen = {}
    for n, item in enumerate(filter_rules.items_of(rules, "port rules {proto, port, action, rule_id}")):
        where = "rules[%d]" % n
        filter_rules.check_fields(item, where, FIELDS)
        proto = item.get("proto")
        if proto not in PROTOS:
            filter_rules.fail(where, "proto", proto, "one of %s" % ", ".join(PROTOS))
        high = 255 if proto.startswith("icmp") else 65535
        port = filter_rules.int_field(item, where, "port", 0, high)
        rule = filter_rules.rule(item, where)
        if (proto, port) in seen:
            filter_rules.fail(where, "port", port, "one rule per %s port (also in rules[%d])" % (proto, seen[(proto, port)]))
        seen[(proto, port)] = n
        value = by_port.setdefault(port, {"set": []})
        value[proto] = rule
        value["set"].append(proto)
    out = []
    for port in sorted(by_port):
        value = by_port[port]
        value["set"] = sorted(value["set"])
        out.append({"key": port, "value": value})
    return out


class FilterModule:
    """ebpf.fleet.xdp_filter_port_entries"""

    def filters(self):
        return {"xdp_filter_port_entries": xdp_filter_port_entries}
