# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: health_gates
short_description: Judge a host by how its counters rose during an observation window
version_added: 0.1.0
author: ebpf.fleet contributors (@ebpf-fleet)
description:
  - Evaluates health gates (conditions from the inventory) on two results of M(ebpf.fleet.bpf_info) with
    C(counters=true), one read when an observation window starts and one when it ends; the rollout of
    C(playbooks/deploy_xdp.yml) stops a wave whose hosts fail a gate. C(docs/health_gates.md) has the whole story.
  - Counters are cumulative, so a gate looks at the B(rise during the window), after - before, of what its
    C(query) finds. A query may find a number, a list of numbers or an object of numbers; a list or an object is
    checked element by element (a key or index missing before the window counts as 0, and so does the whole value
    when the query found nothing before it). A list summed with JMESPath's C(sum) is one number; a function
    given nothing (C(sum) of the counters of a deployment the host does not have) finds nothing.
  - With C(of), the gate checks a ratio, the rise of C(query) divided by the rise of C(of) (a list or an object
    found by C(of) is summed to one number). When C(of) rose by 0 the window saw no traffic and cannot vouch for
    the host; the gate fails unless C(when_missing) is V(pass) or V(skip).
  - When the query finds nothing after the window (null, or an empty list or object), C(when_missing) decides
    (an element of a list or an object that is null likewise fails, or is left out with V(pass) and V(skip)).
    A counter that fell during the window (a map recreated, so the counter was reset) fails the gate whatever
    C(when_missing) says.
  - 'A bad gate definition fails the task naming the gate''s index and name, the field, the value and what was
    expected, such as V(deploy_xdp_health_gates[2] ("x"\).max: "ten" is not a number); so does a query that
    is not valid JMESPath, one that finds something other than numbers, and a bpf_info result that is not a
    registered result of bpf_info (a skipped or failed task).'
  - The failing gates' messages, for a play's C(fail_msg), are the C(message) of the items whose C(ok) is false,
    with Jinja's C(rejectattr) and C(map) (see the examples).
  - Needs the Python library C(jmespath) on the controller.
positional: _input, after, gates
options:
  _input:
    description: The result of M(ebpf.fleet.bpf_info) (with C(counters=true)) registered when the window started.
    type: dict
    required: true
  after:
    description: The result of M(ebpf.fleet.bpf_info) registered when the window ended.
    type: dict
    required: true
  gates:
    description:
      - "The gates, a list of dicts (an empty list or null: no gate). Fields:"
      - C(name) (required), a non-empty string, unique in the list; it names the gate in results and messages.
      - C(query) (required), a JMESPath expression over the bpf_info result, for example
        V(deployments.filter.counters.filter_stats.verdicts.pass).
      - C(of) (optional), a JMESPath expression for the denominator; the gate then checks rise(query) / rise(of).
      - C(min) and C(max) (at least one of them), numbers; the rise, or the ratio, of the query (of each element)
        must be at least C(min) and at most C(max).
      - C(when_missing) (optional) V(fail) (default), V(pass) or V(skip), when the query finds nothing and when
        C(of) rose by 0.
      - C(each) (optional), what one element of a list or an object is called in messages (V(backend) gives
        C(backend 1 rose by 0, below min 1)); default V(element) for a list and V(key) for an object.
    type: list
    elements: dict
    required: true
  variable:
    description: The name of the gates' variable, to name a bad gate in errors.
    type: str
    default: deploy_xdp_health_gates
"""

EXAMPLES = r"""
# Read the counters when the window starts and when it ends, then judge.
- name: Read the counters when the window starts
  ebpf.fleet.bpf_info:
    counters: true
  register: before_result

- name: Observe
  ansible.builtin.pause:
    minutes: 5

- name: Read the counters when the window ends
  ebpf.fleet.bpf_info:
    counters: true
  register: after_result

- name: Check the health gates
  ansible.builtin.assert:
    that: deploy_xdp__gate_results | rejectattr('ok') | list == []
    fail_msg: "{{ deploy_xdp__gate_results | rejectattr('ok') | map(attribute='message') | join('; ') }}"
    success_msg: "{{ deploy_xdp__gate_results | map(attribute='message') | join('; ') }}"
  vars:
    deploy_xdp__gate_results: "{{ before_result | ebpf.fleet.health_gates(after_result, deploy_xdp_health_gates) }}"
    # usually in the inventory (group_vars): the three typical gates, on the roles' deployments filter and lb
    deploy_xdp_health_gates:
      - name: few packets dropped
        query: deployments.filter.counters.filter_stats.verdicts.drop
        of: deployments.filter.counters.filter_stats.verdicts.*
        max: 0.01
        when_missing: skip                 # hosts without the filter
      - name: every backend receives traffic
        query: 'deployments.lb.counters.lb_backend_stats.counters | {web1: "0".packets, web2: "1".packets}'
        each: backend
        min: 1
      - name: no malformed packets
        query: sum(deployments.filter.counters.filter_stats.counters.[malformed_drop, malformed_pass][].packets)
        max: 0

# [{"name": "few packets dropped", "ok": false, "skipped": false, "value": 0.03429, "bound": "max 0.01",
#   "message": "gate \"few packets dropped\": ratio 0.03429 during the window (rose by 12 of 350), above max 0.01
#               (deployments.filter.counters.filter_stats.verdicts.drop / deployments.filter.counters.filter_stats.verdicts.*)"},
#  {"name": "every backend receives traffic", "ok": false, "skipped": false, "value": {"web1": 420, "web2": 0},
#   "bound": "min 1", "message": "gate \"every backend receives traffic\": backend web2 rose by 0, below min 1 (...)"},
#  {"name": "no malformed packets", "ok": true, "skipped": false, "value": 0, "bound": "max 0",
#   "message": "gate \"no malformed packets\": rose by 0 during the window, within max 0 (...)"}]
"""

RETURN = r"""
_value:
  description: One item per gate, in the order of the gates.
  type: list
  elements: dict
  contains:
    name:
      description: The gate's name.
      type: str
      sample: few packets dropped
    ok:
      description: Whether the host passed the gate (true for a skipped gate).
      type: bool
      sample: false
    skipped:
      description: Whether the gate was skipped (C(when_missing=skip) and the query found nothing, or no traffic).
      type: bool
      sample: false
    value:
      description:
        - The rise during the window (or the ratio with C(of)) - a number, or for a list a list and for an object
          an object of numbers (null for an element that found nothing).
        - Null when the query found nothing, when C(of) rose by 0 and when the query changed kind (a number before,
          a list after).
      type: raw
      sample: 0.0343
    bound:
      description: The gate's bounds, V(min 100), V(max 0.01) or V(min 1, max 5).
      type: str
      sample: max 0.01
    message:
      description: One line for an operator, naming the gate, what rose by how much, the bound and the query.
      type: str
      sample: 'gate "web traffic is passed": rose by 3 during the window, below min 100
        (deployments.filter.counters.filter_stats.verdicts.pass)'
"""

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ansible.errors import AnsibleFilterError

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import short_repr

try:
    import jmespath
    from jmespath.exceptions import JMESPathError
except ImportError:
    jmespath = None
    JMESPathError = Exception

FIELDS = ("name", "query", "of", "min", "max", "when_missing", "each")
WHEN_MISSING = ("fail", "pass", "skip")
VARIABLE = "deploy_xdp_health_gates"
VALUE_MAX = 200  # longest rendering of a bad value in a message
ELEMENTS_SHOWN = 5  # failing elements named in one message; the others are counted


@dataclass(frozen=True)
class Gate:
    """A checked gate definition, with its expressions compiled."""

    where: str  # deploy_xdp_health_gates[2] ("x")
    name: str
    query: str
    query_c: Any
    of: str | None
    of_c: Any
    low: float | None
    high: float | None
    when_missing: str
    each: str | None

    @property
    def bound(self) -> str:
        parts = []
        if self.low is not None:
            parts.append("min %s" % num(self.low))
        if self.high is not None:
            parts.append("max %s" % num(self.high))
        return ", ".join(parts)

    @property
    def expression(self) -> str:
        return self.query if self.of is None else "%s / %s" % (self.query, self.of)


@dataclass(frozen=True)
class Found:
    """What an expression found: kind number, list or object, and its numbers by position or key (None: null)."""

    kind: str
    items: dict


def num(value) -> str:
    """A number as an operator reads it: 3, 0.0343, 1e-05."""
    if isinstance(value, int):
        return str(value)
    return "%.6g" % value


def ratio(value: float, gate) -> str:
    """A ratio with 4 significant digits, more when 4 would read as one of the gate's bounds."""
    text = "%.4g" % value
    bounds = [bound for bound in (gate.low, gate.high) if bound is not None]
    if value not in bounds and text in [num(bound) for bound in bounds]:
        text = "%.12g" % value
    return text


def show(value) -> str:
    """A value in a message, JSON-like and bounded: "ten", true, null, 5, ['a', ...]."""
    if isinstance(value, str):
        text = json.dumps(value[:VALUE_MAX], ensure_ascii=False)
        return text if len(value) <= VALUE_MAX else text[:-1] + '..."'
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return short_repr(value, VALUE_MAX)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plain(value):
    """The value in plain Python types (Ansible's tagged str, dict and list are not what jmespath's type checks
    know: sum() would refuse a tagged list of numbers)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {plain(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


# ---------------------------------------------------------------- the gate definitions


def syntax_error(exc) -> str:
    """jmespath's error on one line: 'Incomplete expression at column 3' (its own message has the expression
    and a caret on the next lines)."""
    lines = str(exc).splitlines()
    reason = lines[0] if lines else type(exc).__name__
    for prefix in ("Invalid jmespath expression: ", "Bad jmespath expression: "):
        if reason.startswith(prefix):
            reason = reason[len(prefix) :]
    reason = reason.rstrip(":").replace(", for expression", "")
    position = getattr(exc, "lex_position", None)
    if isinstance(position, int) and "column" not in reason:
        reason += " at column %d" % position
    return reason


def _compile(where: str, field: str, text):
    if not isinstance(text, str) or not text.strip():
        raise AnsibleFilterError("%s.%s: %s is not a JMESPath expression (a non-empty string)" % (where, field, show(text)))
    try:
        return jmespath.compile(text)
    except JMESPathError as exc:
        raise AnsibleFilterError("%s.%s: %s is not a valid JMESPath expression: %s" % (where, field, show(text), syntax_error(exc))) from None


def _bound(where: str, item: Mapping, field: str):
    value = item.get(field)
    if value is None:
        return None
    if not is_number(value):
        raise AnsibleFilterError("%s.%s: %s is not a number (expected a YAML number such as 100 or 0.01, unquoted)" % (where, field, show(value)))
    return plain(value)


def check_gate(index: int, item, variable: str, seen: dict) -> Gate:
    """One gate definition, checked and compiled; seen maps names to the index of the gate that has it."""
    where = "%s[%d]" % (variable, index)
    if not isinstance(item, Mapping):
        raise AnsibleFilterError("%s: %s is not a dict (expected a gate: name, query, min and/or max)" % (where, show(item)))
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise AnsibleFilterError("%s.name: %s is not a name (expected a non-empty string, unique in the list)" % (where, show(name)))
    name = str(name)
    where = "%s (%s)" % (where, show(name))
    if name in seen:
        raise AnsibleFilterError("%s.name: %s is not unique (expected a name of its own; %s[%d] has it too)" % (where, show(name), variable, seen[name]))
    seen[name] = index
    unknown = sorted((key for key in item if key not in FIELDS), key=str)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), FIELDS, n=1, cutoff=0.6)
        raise AnsibleFilterError(
            "%s.%s: unknown field (valid fields: %s)%s" % (where, unknown[0], ", ".join(FIELDS), "; did you mean %s?" % close[0] if close else "")
        )
    if item.get("query") is None:
        raise AnsibleFilterError("%s.query: missing (expected a JMESPath expression over the bpf_info result)" % where)
    query_c = _compile(where, "query", item["query"])
    of = item.get("of")
    of_c = None if of is None else _compile(where, "of", of)
    low, high = _bound(where, item, "min"), _bound(where, item, "max")
    if low is None and high is None:
        raise AnsibleFilterError("%s: neither min nor max is set (expected at least one bound)" % where)
    if low is not None and high is not None and low > high:
        raise AnsibleFilterError("%s.min: %s is above max %s (expected min <= max)" % (where, num(low), num(high)))
    when_missing = item.get("when_missing")
    when_missing = "fail" if when_missing is None else when_missing
    if when_missing not in WHEN_MISSING:
        raise AnsibleFilterError("%s.when_missing: %s is not one of %s" % (where, show(when_missing), ", ".join(WHEN_MISSING)))
    each = item.get("each")
    if each is not None and (not isinstance(each, str) or not each.strip()):
        raise AnsibleFilterError("%s.each: %s is not a word for an element (expected a non-empty string such as backend)" % (where, show(each)))
    return Gate(
        where=where,
        name=name,
        query=str(item["query"]),
        query_c=query_c,
        of=None if of is None else str(of),
        of_c=of_c,
        low=low,
        high=high,
        when_missing=str(when_missing),
        each=None if each is None else str(each),
    )


def check_gates(gates, variable: str = VARIABLE) -> list:
    """The gate definitions, checked; the first bad one raises AnsibleFilterError."""
    if gates is None:
        return []
    if isinstance(gates, (str, Mapping)) or not isinstance(gates, (list, tuple)):
        raise AnsibleFilterError("%s: %s is not a list of gates (expected a list of dicts with name, query, min and/or max)" % (variable, show(gates)))
    seen = {}
    return [check_gate(index, item, variable, seen) for index, item in enumerate(gates)]


def check_result(result, when: str) -> dict:
    """A registered bpf_info result, in plain types; anything else raises AnsibleFilterError."""
    what = "health_gates: the bpf_info result %s the window" % when
    if not isinstance(result, Mapping):
        raise AnsibleFilterError("%s is %s, not a dict (expected the registered result of ebpf.fleet.bpf_info with counters: true)" % (what, show(result)))
    if result.get("skipped"):
        raise AnsibleFilterError("%s is a skipped task (%s): the gates need both readings" % (what, result.get("skip_reason") or "skipped"))
    if result.get("failed"):
        raise AnsibleFilterError(
            "%s is a failed task (%s): the gates need both readings" % (what, str(result.get("msg") or "failed").splitlines()[0][:VALUE_MAX])
        )
    if "results" in result and "deployments" not in result:
        raise AnsibleFilterError("%s is a loop's result (results: [...]): register bpf_info without a loop" % what)
    if not isinstance(result.get("deployments"), Mapping):
        keys = ", ".join(sorted(str(key) for key in result))[:VALUE_MAX]
        raise AnsibleFilterError(
            "%s has no deployments (its keys: %s): expected the registered result of ebpf.fleet.bpf_info, without query" % (what, keys or "none")
        )
    return plain(result)


# ---------------------------------------------------------------- evaluating


def search(gate: Gate, field: str, data: dict, when: str) -> Found | None:
    """What the gate's query (or of) finds in data: None when nothing (null, [], {})."""
    text, compiled = (gate.query, gate.query_c) if field == "query" else (gate.of, gate.of_c)
    try:
        found = compiled.search(data)
    except JMESPathError as exc:
        if getattr(exc, "actual_type", None) == "null":
            return None  # a function given nothing, such as sum() of a deployment the host does not have
        raise AnsibleFilterError(
            "%s.%s: %s failed on the bpf_info result %s the window: %s" % (gate.where, field, show(text), when, str(exc).splitlines()[0])
        ) from None
    if found is None or found == [] or found == {}:
        return None
    if is_number(found):
        return Found("number", {None: found})
    if isinstance(found, list):
        items = dict(enumerate(found))
        kind = "list"
    elif isinstance(found, dict):
        items, kind = found, "object"
    else:
        items, kind = {None: found}, "number"
    for value in items.values():
        if value is not None and not is_number(value):
            raise AnsibleFilterError(
                "%s.%s: %s found %s %s the window, not a number, a list or an object of numbers (expected "
                "counters: add .packets, or sum(...) for one number)" % (gate.where, field, show(text), show(found if kind == "number" else value), when)
            )
    return Found(kind, items)


def total(found: Found | None):
    return 0 if found is None else sum(value for value in found.items.values() if value is not None)


def label(gate: Gate, kind: str, key) -> str:
    return "%s %s" % (gate.each or ("element" if kind == "list" else "key"), key)


def outcome(gate: Gate, ok: bool, value, text: str, skipped: bool = False) -> dict:
    return {
        "name": gate.name,
        "ok": ok,
        "skipped": skipped,
        "value": value,
        "bound": gate.bound,
        "message": 'gate %s: %s (%s)' % (json.dumps(gate.name, ensure_ascii=False), text, gate.expression),
    }


def missing(gate: Gate, text: str) -> dict:
    """The gate when its query found nothing (or the window saw no traffic): when_missing decides."""
    if gate.when_missing == "fail":
        return outcome(gate, False, None, "%s; fails (when_missing: fail)" % text)
    return outcome(
        gate,
        True,
        None,
        "%s; %s (when_missing: %s)" % (text, "passes" if gate.when_missing == "pass" else "skipped", gate.when_missing),
        skipped=gate.when_missing == "skip",
    )


def judge(gate: Gate, rise, denominator, during: str = "") -> tuple:
    """(ok, value, what happened) for one rise; denominator None without of; during names the window or not."""
    if rise < 0:
        return False, rise, "fell by %s%s (a counter reset?), cannot be judged" % (num(-rise), during)
    if denominator is None:
        value, text = rise, "rose by %s%s" % (num(rise), during)
    else:
        value = rise / denominator
        text = "ratio %s%s (rose by %s of %s)" % (ratio(value, gate), during, num(rise), num(denominator))
    if gate.low is not None and value < gate.low:
        return False, value, "%s, below min %s" % (text, num(gate.low))
    if gate.high is not None and value > gate.high:
        return False, value, "%s, above max %s" % (text, num(gate.high))
    return True, value, "%s, within %s" % (text, gate.bound)


def evaluate(gate: Gate, before: dict, after: dict) -> dict:
    """One gate's result on the two readings."""
    found = search(gate, "query", after, "after")
    if found is None:
        return missing(gate, "found nothing after the window")
    earlier = search(gate, "query", before, "before")
    if earlier is not None and earlier.kind != found.kind:
        return outcome(gate, False, None, "found a %s before the window and a %s after it, cannot be judged" % (earlier.kind, found.kind))
    denominator = None
    if gate.of is not None:
        of_found = search(gate, "of", after, "after")
        if of_found is None:
            return missing(gate, "the denominator found nothing after the window")
        denominator = total(of_found) - total(search(gate, "of", before, "before"))
        if denominator < 0:
            return outcome(gate, False, None, "the denominator fell by %s (a counter reset during the window?), cannot be judged" % num(-denominator))
        if denominator == 0:
            return missing(gate, "no traffic during the window (%s rose by 0), cannot vouch for the host" % gate.of)
    start = earlier.items if earlier is not None else {}
    if found.kind == "number":
        ok, value, text = judge(gate, found.items[None] - (start.get(None) or 0), denominator, " during the window")
        return outcome(gate, ok, value, text)
    values, failures, nothing = {}, [], []
    for key, now in found.items.items():
        if now is None:
            values[key] = None
            nothing.append(key)
            if gate.when_missing == "fail":
                failures.append("%s found nothing" % label(gate, found.kind, key))
            continue
        ok, values[key], text = judge(gate, now - (start.get(key) or 0), denominator)
        if not ok:
            failures.append("%s %s" % (label(gate, found.kind, key), text))
    value = list(values.values()) if found.kind == "list" else values
    if len(nothing) == len(values):
        return missing(gate, "found only nulls after the window")
    if failures:
        shown = "; ".join(failures[:ELEMENTS_SHOWN])
        if len(failures) > ELEMENTS_SHOWN:
            shown += "; and %d more" % (len(failures) - ELEMENTS_SHOWN)
        return outcome(gate, False, value, shown)
    noun = gate.each or ("element" if found.kind == "list" else "key")
    text = "every %s (%d) within %s during the window" % (noun, len(values) - len(nothing), gate.bound)
    if nothing:
        text += "; %d found nothing (when_missing: %s)" % (len(nothing), gate.when_missing)
    return outcome(gate, True, value, text)


def health_gates(before, after, gates, variable: str = VARIABLE) -> list:
    """Two bpf_info results (window start, window end) and the gates -> one result per gate."""
    if jmespath is None:
        raise AnsibleFilterError(
            "health_gates needs the Python library jmespath on the controller (pip install jmespath, or the Debian package python3-jmespath)"
        )
    checked = check_gates(gates, variable)
    before, after = check_result(before, "before"), check_result(after, "after")
    return [evaluate(gate, before, after) for gate in checked]


class FilterModule:
    """ebpf.fleet.health_gates"""

    def filters(self):
        return {"health_gates": health_gates}
