# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Input checks shared by the collection's Jinja filters (plugins/filter/).

The filters turn operator declarations into bpf_map entries; the real work is
in module_utils (xdp_filter_tables, maglev). Here: the checks that give every bad
item an error naming where it is, the field, the value and what was expected,
raised as AnsibleFilterError.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import short_repr

ACTIONS = ("pass", "drop", "redirect")
RULE_ID_MAX = 4095  # filter_rule_stats holds FLEET_FILTER_RULES_MAX (4096) counters
REDIRECT_SLOT_MAX = 63  # filter_redirect holds FLEET_FILTER_REDIRECT_MAX (64) slots
MARK_MAX = 0xFFFFFFFF  # skb->mark is a __u32; 0 is no mark
VALUE_MAX = 200  # longest rendering of a bad value in a message (a huge input never travels whole)


def show(value) -> str:
    """repr(value), bounded: a huge or deeply nested value is cut, never rendered whole (errors.short_repr)."""
    return short_repr(value, VALUE_MAX)


def fail(where: str, field: str, value, expected: str):
    """Raise the filters' error: '<where>.<field> <value>: expected <expected>'."""
    name = "%s.%s" % (where, field) if field else where
    raise AnsibleFilterError("%s %s: expected %s" % (name, show(value), expected))


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_field(item: Mapping, where: str, field: str, low: int, high: int, default=None, required=True) -> int:
    """An integer field in low..high; strings of digits are accepted (YAML from the command line)."""
    if field not in item or item[field] is None:
        if not required:
            return default
        fail(where, field, None, "an integer %d..%d (the field is required)" % (low, high))
    value = item[field]
    num = value
    if isinstance(value, str) and value.strip().isdigit():
        num = int(value.strip())
    if not is_int(num) or not low <= num <= high:
        fail(where, field, value, "an integer %d..%d" % (low, high))
    return num


def items_of(data, what: str, name: str = "input") -> list:
    """The list of dicts a filter takes (a single dict is one item)."""
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, (list, tuple)):
        raise AnsibleFilterError("%s %s: expected a list of %s" % (name, show(data), what))
    for n, item in enumerate(data):
        if not isinstance(item, Mapping):
            raise AnsibleFilterError("%s[%d] %s: expected a dict (%s)" % (name, n, show(item), what))
    return list(data)


def check_fields(item: Mapping, where: str, allowed) -> None:
    """Refuse unknown or misspelt fields, naming each, its value, the valid fields and the closest one."""
    unknown = sorted((key for key in item if key not in allowed), key=str)
    if not unknown:
        return
    key = unknown[0]
    expected = "no such field; valid fields: %s" % ", ".join(allowed)
    close = difflib.get_close_matches(str(key), [str(name) for name in allowed], n=1, cutoff=0.6)
    if close:
        expected += " (did you mean %s?)" % close[0]
    if len(unknown) > 1:
        expected += "; other unknown fields: %s" % ", ".join(show(other) for other in unknown[1:11])
    fail(where, key if isinstance(key, str) else show(key), item[key], expected)


def mark(item: Mapping, where: str) -> int:
    """A packet mark: an integer 1..2^32-1, or a string such as '0x10' (any base int() reads)."""
    value = item["mark"]
    num = value
    if isinstance(value, str):
        try:
            num = int(value.strip(), 0)
        except ValueError:
            num = None
    if not is_int(num) or not 1 <= num <= MARK_MAX:
        fail(where, "mark", value, "an integer 1..%d or a string such as '0x10' (0 is no mark)" % MARK_MAX)
    return num


def rule(item: Mapping, where: str) -> dict:
    """The fleet_filter_rule of an item: {action, rule_id, redirect_slot}, and mark when the item has one."""
    action = item.get("action")
    if action not in ACTIONS:
        fail(where, "action", action, "one of %s" % ", ".join(ACTIONS))
    rule_id = int_field(item, where, "rule_id", 0, RULE_ID_MAX, default=0, required=False)
    slot = int_field(item, where, "redirect_slot", 0, REDIRECT_SLOT_MAX, default=0, required=False)
    if slot and action != "redirect":
        fail(where, "redirect_slot", slot, "no slot unless action is redirect")
    out = {"action": action, "rule_id": rule_id, "redirect_slot": slot}
    if item.get("mark") is not None:
        if action == "drop":
            fail(where, "mark", item["mark"], "no mark on a drop rule (a dropped packet reaches no TC hook)")
        out["mark"] = mark(item, where)
    return out


# ---------------------------------------------------------------- the management fail-safe (ebpf.fleet.xdp_filter)

BLOCKING = ("drop", "redirect")


def management_networks(sources, name: str) -> list:
    """The management sources (CIDRs) as ipaddress networks; a bad one fails naming name[index]."""
    nets = []
    for n, text in enumerate(sources or []):
        try:
            nets.append(ipaddress.ip_network(str(text).strip(), strict=False))
        except ValueError:
            fail("%s[%d]" % (name, n), "", text, "an IPv4 or IPv6 address or CIDR")
    return nets


def blocked_management_source(net, mgmt_nets):
    """The first management network that a blocking rule for `net` covers or overlaps, or None."""
    for mgmt in mgmt_nets:
        if mgmt.version == net.version and net.overlaps(mgmt):
            return mgmt
    return None


def describe_rule(item: Mapping) -> str:
    """A rule as the operator wrote it, in flow style and bounded: {cidr: 192.0.2.0/24, action: drop, rule_id: 1}."""
    return "{%s}" % ", ".join("%s: %s" % (key, item[key]) for key in item)[:VALUE_MAX]
