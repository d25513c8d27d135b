# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: tc_egress_entries
short_description: Egress classes and rules to the entries of every map tc_egress reads
version_added: 0.1.0
author: ebpf.fleet contributors (@ebpf-fleet)
description:
  - Turns egress classes (ACL verdict, DSCP, priority, rate limit or pacing) and the rules that put traffic in them
    (by destination prefix with an optional protocol and port, by destination port, by packet mark) into the
    entries of every map of C(bpf/tc_egress.c) that a deployment declares, ready for M(ebpf.fleet.bpf_map) with
    O(ebpf.fleet.bpf_map#module:mode=sync), one task per map (see EXAMPLES). The egress counterpart of
    P(ebpf.fleet.xdp_filter_v4_entries#filter).
  - Classes are named; rules point at a class by its name. Class ids (0..63) are given out in the order the classes
    are written (the default class gets 0), or taken from C(id) where given; RV(_value.classes) maps names to ids,
    which is how C(egress_stats) counts them.
  - The output always holds C(egress_config) and class 0, and every map even when empty, so that O(ebpf.fleet.bpf_map#module:mode=sync)
    also removes what an earlier declaration had and this one does not.
  - A bad item fails before anything is written, with an error naming where it is (C(classes[2].dscp),
    C(rules[0].cidr)), the value and what was expected; unknown or misspelt fields are refused, naming the closest
    valid one.
positional: _input
options:
  _input:
    description:
      - "A dict C({classes: [...], rules: [...], default_class: <name>}), all three optional."
      - "C(classes): a list of dicts. C(name) (required: letters, digits, C(_), C(-), at most 64 characters);
        C(id) (0..63, optional); C(action) V(pass) (default) or V(drop) (the ACL: the class's packets are dropped);
        C(dscp) (0..63 or a name: V(cs0)..V(cs7), V(af11)..V(af43), V(ef), V(va), V(le); not given: the DSCP
        is left as it is; ECN bits are always kept); C(priority) (skb priority for mq/prio qdiscs, 1..2^32-1);
        C(limit) V(none) (default), V(drop) (a token bucket: what exceeds C(rate_bps) with a burst of
        C(burst_bytes) is dropped) or V(pace) (packets get an earliest departure time for the fq qdisc, those
        more than C(horizon_ns) ahead are dropped); C(rate_bps) (bytes per second, required above 0 with a limit);
        C(burst_bytes) (required with V(drop): at least one packet, for example 1514 or more); C(horizon_ns)
        (V(pace) only, default 10000000000, the fq qdisc's own default horizon)."
      - "C(rules): a list of dicts, each of one of three kinds, all with C(class) (a class name).
        A prefix rule C({cidr: 198.51.100.0/24, proto: udp, port: 5060, class: voice}): an IPv4 or IPv6 destination
        network (host bits set are an error), optionally only for C(proto) (V(tcp), V(udp), V(icmp) for IPv4,
        V(icmpv6) for IPv6, or V(any), the default) and C(port) (1..65535, with V(tcp) or V(udp)); the longest prefix
        wins, and a packet whose protocol or port does not match its longest prefix's rule falls through to the port
        rules. A port rule C({proto: tcp, port: 443, class: web}): the destination port of any address. A mark
        rule C({mark: 0x10, class: bulk}): packets whose skb mark is that number (1..2^32-1, an integer or a
        string such as V(0x10)); marks are looked at first."
      - "C(default_class): the name of the class of everything no rule claims, and of frames the program cannot
        parse. Default V(default); when it is V(default) (given or not) and no class has that name, a class
        V(default) with action V(pass) and nothing else is added."
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Declare every map of the egress program (one bpf_map task per map, mode sync)
  ebpf.fleet.bpf_map:
    name: egress
    map: "{{ item.key }}"
    mode: sync
    entries: "{{ item.value }}"
  loop: "{{ (egress_policy | ebpf.fleet.tc_egress_entries).maps | dict2items }}"
  loop_control:
    label: "{{ item.key }}"
  vars:
    egress_policy:
      default_class: best_effort
      classes:
        - {name: best_effort}
        - {name: voice, dscp: ef, priority: 6}
        - {name: blocked, action: drop}
        - {name: bulk, dscp: af11, limit: drop, rate_bps: 1250000, burst_bytes: 15000}
        - {name: backup, limit: pace, rate_bps: 12500000, horizon_ns: 2000000000}
      rules:
        - {cidr: 198.51.100.0/24, class: blocked}
        - {cidr: 203.0.113.0/24, proto: udp, port: 5060, class: voice}
        - {cidr: "2001:db8:dead::/48", class: blocked}
        - {proto: tcp, port: 873, class: backup}
        - {mark: 0x10, class: bulk}

# (egress_policy | ebpf.fleet.tc_egress_entries).classes
#   {"best_effort": 0, "voice": 1, "blocked": 2, "bulk": 3, "backup": 4}
# (egress_policy | ebpf.fleet.tc_egress_entries).maps.egress_ports
#   [{"key": 873, "value": {"tcp": 4, "udp": 0, "set": ["tcp"]}}]
"""

RETURN = r"""
_value:
  description: The maps' entries and the class ids.
  type: dict
  contains:
    maps:
      description:
        - "Every map of C(tc_egress) a deployment declares, by map name, each a list of C({key:, value:}) items in
          M(ebpf.fleet.bpf_map) notation (an empty list for a map with nothing to hold):
          C(egress_config) (C({default_class})), C(egress_classes) (the class fields, with the rate fields the
          program derives from C(rate_bps) and C(burst_bytes) already computed), C(egress_mark_classes) and
          C(egress_marks) (marks below and from 65536), C(egress_dst_v4_16), C(egress_dst_v4_24) and
          C(egress_dst_v4_32) (the IPv4 stride table by level; the last two keyed by the address as a network-order
          integer), C(egress_dst_v6) (CIDR keys) and C(egress_ports) (C({tcp, udp, set}) by port)."
        - The rate-limit state C(egress_buckets) and the counters C(egress_stats) are the program's own and not
          listed.
      type: dict
      returned: always
    classes:
      description: The class ids by class name (C(egress_stats) keys are C({class_id, outcome})).
      type: dict
      returned: always
"""

import ipaddress
import re

from ansible.errors import AnsibleFilterError

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import tc_egress_tables
from ansible_collections.ebpf.fleet.plugins.plugin_utils import filter_rules

TOP_FIELDS = ("classes", "rules", "default_class")
CLASS_FIELDS = ("name", "id", "action", "dscp", "priority", "limit", "rate_bps", "burst_bytes", "horizon_ns")
RULE_FIELDS = ("cidr", "proto", "port", "mark", "class")
MAPS = (
    "egress_config",
    "egress_classes",
    "egress_mark_classes",
    "egress_marks",
    "egress_dst_v4_16",
    "egress_dst_v4_24",
    "egress_dst_v4_32",
    "egress_dst_v6",
    "egress_ports",
)
ACTIONS = ("pass", "drop")
LIMITS = ("none", "drop", "pace")
PROTOS = ("any", "tcp", "udp", "icmp", "icmpv6")
DEFAULT_CLASS = "default"
DEFAULT_HORIZON_NS = 10_000_000_000  # the fq qdisc's default horizon
U32 = 0xFFFFFFFF
U64 = (1 << 64) - 1
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DSCP_NAMES = dict(
    [("cs%d" % n, 8 * n) for n in range(8)]
    + [("af%d%d" % (x, y), 8 * x + 2 * y) for x in range(1, 5) for y in range(1, 4)]
    + [("ef", 46), ("va", 44), ("le", 1)]
)


def _dscp(item, where):
    value = item["dscp"]
    if isinstance(value, str) and value.strip().lower() in DSCP_NAMES:
        return DSCP_NAMES[value.strip().lower()]
    if isinstance(value, str) and not value.strip().isdigit():
        filter_rules.fail(where, "dscp", value, "an integer 0..63 or a name (cs0..cs7, af11..af43, ef, va, le)")
    return filter_rules.int_field(item, where, "dscp", 0, 63)


def _choice(item, where, field, choices, default):
    value = item.get(field, default)
    if value is None:
        value = default
    if value not in choices:
        filter_rules.fail(where, field, value, "one of %s" % ", ".join(choices))
    return value


def _class(item, where) -> dict:
    """The operator's class -> (name, id or None, egress_classes value)."""
    filter_rules.check_fields(item, where, CLASS_FIELDS)
    name = item.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        filter_rules.fail(where, "name", name, "a class name of 1 to 64 letters, digits, _ or -")
    class_id = filter_rules.int_field(item, where, "id", 0, tc_egress_tables.CLASS_IDS - 1, required=False)
    action = _choice(item, where, "action", ACTIONS, "pass")
    limit = _choice(item, where, "limit", LIMITS, "none")
    value = {"action": action, "limit": limit, "set_dscp": 0, "dscp": 0, "priority": 0, "rate_bps": 0, "burst_bytes": 0, "horizon_ns": 0}
    if action == "drop":
        for field in ("dscp", "priority", "rate_bps", "burst_bytes", "horizon_ns"):
            if item.get(field) is not None:
                filter_rules.fail(where, field, item[field], "nothing but the action in a drop class (its packets are dropped)")
        if limit != "none":
            filter_rules.fail(where, "limit", limit, "none in a drop class (its packets are dropped)")
    if item.get("dscp") is not None:
        value.update(set_dscp=1, dscp=_dscp(item, where))
    value["priority"] = filter_rules.int_field(item, where, "priority", 1, U32, default=0, required=False)
    if limit == "none":
        for field in ("rate_bps", "burst_bytes", "horizon_ns"):
            if item.get(field) is not None:
                filter_rules.fail(where, field, item[field], "no %s unless limit is drop or pace" % field)
    else:
        value["rate_bps"] = filter_rules.int_field(item, where, "rate_bps", 1, U64)
    if limit == "drop":
        if item.get("horizon_ns") is not None:
            filter_rules.fail(where, "horizon_ns", item["horizon_ns"], "no horizon_ns unless limit is pace")
        value["burst_bytes"] = filter_rules.int_field(item, where, "burst_bytes", 1, U64)
    elif limit == "pace":
        if item.get("burst_bytes") is not None:
            filter_rules.fail(where, "burst_bytes", item["burst_bytes"], "no burst_bytes unless limit is drop")
        value["horizon_ns"] = filter_rules.int_field(item, where, "horizon_ns", 1, U64, default=DEFAULT_HORIZON_NS, required=False)
    try:
        value = tc_egress_tables.class_value(value)
    except tc_egress_tables.EgressTableError as exc:
        raise AnsibleFilterError("%s: %s" % (where, exc)) from None
    return name, class_id, value


def _class_ids(declared, default_name):
    """{name: id}: explicit ids kept, the default class 0 when free, the others the lowest free ids in order."""
    ids, taken = {}, {}
    for where, name, class_id, _value in declared:
        if class_id is not None:
            if class_id in taken:
                filter_rules.fail(where, "id", class_id, "an id no other class has (%s has it)" % taken[class_id])
            ids[name], taken[class_id] = class_id, name
    if default_name not in ids and 0 not in taken:
        ids[default_name], taken[0] = 0, default_name
    free = (n for n in range(tc_egress_tables.CLASS_IDS) if n not in taken)
    for where, name, _class_id, _value in declared:
        if name not in ids:
            class_id = next(free, None)
            if class_id is None:
                filter_rules.fail(where, "name", name, "at most %d classes (ids 0..%d)" % (tc_egress_tables.CLASS_IDS, tc_egress_tables.CLASS_IDS - 1))
            ids[name] = class_id
    return ids


def _class_ref(item, where, ids):
    name = item.get("class")
    if not isinstance(name, str) or name not in ids:
        expected = "the name of a declared class (%s)" % ", ".join(sorted(ids))
        close = [n for n in sorted(ids) if isinstance(name, str) and n.lower() == name.lower()]
        if close:
            expected += " (did you mean %s?)" % close[0]
        filter_rules.fail(where, "class", name, expected)
    return ids[name]


def _prefix_rule(item, where, class_id):
    text = item.get("cidr")
    expected = "an IPv4 or IPv6 address or network such as 198.51.100.0/24 or 2001:db8::/32"
    if not isinstance(text, str):
        filter_rules.fail(where, "cidr", text, expected)
    try:
        net = ipaddress.ip_network(text.strip())
    except ValueError as exc:
        if "host bits" in str(exc):
            expected = "the network address, %s (host bits are set)" % ipaddress.ip_network(text.strip(), strict=False)
        filter_rules.fail(where, "cidr", text, expected)
    proto = _choice(item, where, "proto", PROTOS, "any")
    if (proto == "icmp" and net.version == 6) or (proto == "icmpv6" and net.version == 4):
        filter_rules.fail(where, "proto", proto, "icmp with an IPv4 network, icmpv6 with an IPv6 one")
    port = 0
    if item.get("port") is not None:
        if proto not in ("tcp", "udp"):
            filter_rules.fail(where, "port", item["port"], "no port unless proto is tcp or udp")
        port = filter_rules.int_field(item, where, "port", 1, 65535)
    return net, (class_id, 0 if proto == "any" else proto, port)


def _rule_value(rule):
    class_id, proto, port = rule
    return {"class_id": class_id, "proto": proto, "port": port}


def tc_egress_entries(policy):
    """{classes, rules, default_class} -> {maps: {map name: bpf_map entries}, classes: {name: id}}."""
    if policy is None:
        policy = {}
    if not isinstance(policy, dict):
        filter_rules.fail("input", "", policy, "a dict {classes: [...], rules: [...], default_class: <name>}")
    filter_rules.check_fields(policy, "input", TOP_FIELDS)
    declared, first = [], {}
    for n, item in enumerate(filter_rules.items_of(policy.get("classes") or [], "classes {name, action, dscp, ...}", "classes")):
        where = "classes[%d]" % n
        name, class_id, value = _class(item, where)
        if name in first:
            filter_rules.fail(where, "name", name, "each class name once (also in %s)" % first[name])
        first[name] = where
        declared.append((where, name, class_id, value))
    default_name = policy.get("default_class")
    if default_name is None or (default_name == DEFAULT_CLASS and DEFAULT_CLASS not in first):
        default_name = DEFAULT_CLASS
        if DEFAULT_CLASS not in first:
            declared.insert(
                0,
                (
                    "classes",
                    DEFAULT_CLASS,
                    None,
                    tc_egress_tables.class_value(
                        {"action": "pass", "limit": "none", "set_dscp": 0, "dscp": 0, "priority": 0, "rate_bps": 0, "burst_bytes": 0, "horizon_ns": 0}
                    ),
                ),
            )
    elif default_name not in first:
        filter_rules.fail("input", "default_class", default_name, "the name of a declared class (%s)" % ", ".join(sorted(first) or ["none declared"]))
    ids = _class_ids(declared, default_name)

    v4, v6, ports, marks, seen = {}, {}, {}, {}, {}
    for n, item in enumerate(filter_rules.items_of(policy.get("rules") or [], "rules {cidr, proto, port, mark, class}", "rules")):
        where = "rules[%d]" % n
        filter_rules.check_fields(item, where, RULE_FIELDS)
        class_id = _class_ref(item, where, ids)
        if item.get("mark") is not None:
            for field in ("cidr", "proto", "port"):
                if item.get(field) is not None:
                    filter_rules.fail(where, field, item[field], "no %s in a mark rule (a mark alone decides)" % field)
            key = ("mark", filter_rules.mark(item, where))
            marks[key[1]] = class_id
        elif item.get("cidr") is not None:
            net, rule = _prefix_rule(item, where, class_id)
            key = ("cidr", str(net))
            (v4 if net.version == 4 else v6)[str(net)] = rule
        else:
            proto = item.get("proto")
            if proto not in ("tcp", "udp"):
                filter_rules.fail(
                    where, "proto", proto, "tcp or udp in a port rule (a rule without cidr or mark); a rule needs one of cidr, mark, or proto and port"
                )
            port = filter_rules.int_field(item, where, "port", 1, 65535)
            key = ("port", proto, port)
            ports.setdefault(port, {})[proto] = class_id
        if key in seen:
            field, what = {"mark": ("mark", "mark"), "cidr": ("cidr", "network"), "port": ("port", "protocol and port")}[key[0]]
            filter_rules.fail(where, field, item.get(field), "one rule per %s (also in %s)" % (what, seen[key]))
        seen[key] = where

    maps = {name: [] for name in MAPS}
    maps["egress_config"].append({"key": 0, "value": {"default_class": ids[default_name]}})
    classes = {ids[name]: value for _where, name, _class_id, value in declared}
    classes.setdefault(0, tc_egress_tables.class_value({"action": "pass", "limit": "none"}))
    maps["egress_classes"] = [{"key": class_id, "value": classes[class_id]} for class_id in sorted(classes)]
    try:
        direct, wide = tc_egress_tables.mark_entries(marks)
        level16, level24, level32 = tc_egress_tables.expand_v4(v4)
    except tc_egress_tables.EgressTableError as exc:
        raise AnsibleFilterError("rules: %s" % exc) from None
    maps["egress_mark_classes"] = [{"key": mark, "value": direct[mark]} for mark in sorted(direct)]
    maps["egress_marks"] = [{"key": mark, "value": wide[mark]} for mark in sorted(wide)]
    for index, (rule, flags) in sorted(level16.items()):
        value = {"flags": sorted(flags)}
        if rule is not None:
            value["rule"] = _rule_value(rule)
        maps["egress_dst_v4_16"].append({"key": index, "value": value})
    for network, (rule, flags, hosts) in sorted(level24.items()):
        value = {"flags": sorted(flags), "hosts": hosts}
        if rule is not None:
            value["rule"] = _rule_value(rule)
        maps["egress_dst_v4_24"].append({"key": network, "value": value})
    maps["egress_dst_v4_32"] = [{"key": address, "value": _rule_value(level32[address])} for address in sorted(level32)]
    maps["egress_dst_v6"] = [
        {"key": cidr, "value": _rule_value(v6[cidr])}
        for cidr in sorted(v6, key=lambda c: (ipaddress.ip_network(c).network_address, ipaddress.ip_network(c).prefixlen))
    ]
    for port in sorted(ports):
        value = {"tcp": ports[port].get("tcp", 0), "udp": ports[port].get("udp", 0), "set": sorted(ports[port])}
        maps["egress_ports"].append({"key": port, "value": value})
    return {"maps": maps, "classes": {name: ids[name] for _w, name, _c, _v in declared}}


class FilterModule:
    """ebpf.fleet.tc_egress_entries"""

    def filters(self):
        return {"tc_egress_entries": tc_egress_entries}
