# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Input checks shared by the collection's Jinja filters (plugins/filter/).

The filters turn operator declarations into bpf_map entries; the real work is
in module_utils (filter_tables, maglev). Here: the checks that give every bad
item an error naming where it is, the field, the value and what was expected,
raised as AnsibleFilterError.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

ACTIONS = ("pass", "drop", "redirect")
RULE_ID_MAX = 4095        # filter_rule_stats holds FLEET_FILTER_RULES_MAX (4096) counters
REDIRECT_SLOT_MAX = 63    # filter_redirect holds FLEET_FILTER_REDIRECT_MAX (64) slots


def fail(where: str, field: str, value, expected: str):
    """Raise the filters' error: '<where>.<field> <value>: expected <expected>'."""
    name = "%s.%s" % (where, field) if field else where
    raise AnsibleFilterError("%s %r: expected %s" % (name, value, expected))


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
        raise AnsibleFilterError("%s %r: expected a list of %s" % (name, data, what))
    for n, item in enumerate(data):
        if not isinstance(item, Mapping):
            raise AnsibleFilterError("%s[%d] %r: expected a dict (%s)" % (name, n, item, what))
    return list(data)


def check_fields(item: Mapping, where: str, allowed) -> None:
    unknown = sorted(str(key) for key in item if key not in allowed)
    if unknown:
        fail(where, unknown[0], item[unknown[0]], "no such field; valid fields: %s" % ", ".join(allowed))


def rule(item: Mapping, where: str) -> dict:
    """The fleet_filter_rule of an item: {action, rule_id, redirect_slot}."""
    action = item.get("action")
    if action not in ACTIONS:
        fail(where, "action", action, "one of %s" % ", ".join(ACTIONS))
    rule_id = int_field(item, where, "rule_id", 0, RULE_ID_MAX, default=0, required=False)
    slot = int_field(item, where, "redirect_slot", 0, REDIRECT_SLOT_MAX, default=0, required=False)
    if slot and action != "redirect":
        fail(where, "redirect_slot", slot, "no slot unless action is redirect")
    return {"action": action, "rule_id": rule_id, "redirect_slot": slot}
