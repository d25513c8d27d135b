# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: xdp_filter_failsafe
short_description: What in an xdp_filter policy would block the management ports
version_added: 0.1.0
author: ebpf.fleet contributors (@ebpf-fleet)
description:
  - The fail-safe of the role ebpf.fleet.xdp_filter (in the spirit of Calico's C(FailsafeInboundHostPorts)) - a policy
    that would block the management ports is refused before anything is applied. This filter lists why a policy
    would; the role fails with the list unless C(xdp_filter_allow_lockout) is true.
  - "Refused: a default verdict V(drop) or V(redirect) with no management source (nothing would keep SSH open),
    or with no management port while C(mgmt_match) is V(ports); a source rule that drops or redirects a source
    overlapping a management source; a TCP port rule that drops or redirects a management port."
  - The data plane itself lets management traffic through whatever the rules say (the management list wins over
    every verdict but pass); a rule that contradicts the management list is still refused, so the operator says
    which of the two is meant.
  - Rules that are not valid are skipped here (the entry filters name them).
positional: _input
options:
  _input:
    description:
      - "The policy: a dict with the role's variables without their prefix: C(default_verdict), C(v4_rules),
        C(v6_rules), C(port_rules), C(mgmt_v4), C(mgmt_v6), C(mgmt_ports), C(mgmt_match) (V(ports) or V(any))."
      - Missing keys are empty (V(pass) for C(default_verdict), V(ports) for C(mgmt_match)).
    type: dict
    required: true
  prefix:
    description: Put before each key to name the variable in the messages.
    type: str
    default: xdp_filter_
"""

EXAMPLES = r"""
- name: Refuse a policy that would block the management ports
  ansible.builtin.assert:
    that: problems == []
    fail_msg: "{{ problems | join('; ') }}"
  vars:
    problems: >-
      {{ {'default_verdict': 'drop', 'mgmt_v4': ['198.51.100.1/32'], 'mgmt_ports': [22],
          'v4_rules': [{'cidr': '198.51.100.0/24', 'action': 'drop', 'rule_id': 3}]} | ebpf.fleet.xdp_filter_failsafe }}

# ["xdp_filter_v4_rules[0] {cidr: 198.51.100.0/24, action: drop, rule_id: 3} would drop the management source
#   198.51.100.1/32 (xdp_filter_mgmt_v4)"]
"""

RETURN = r"""
_value:
  description: One message per reason, each naming the variable, the rule and what it would block; empty when none.
  type: list
  elements: str
"""

import ipaddress
from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.ebpf.fleet.plugins.plugin_utils import filter_rules


def _ints(values) -> list:
    out = []
    for value in values or []:
        try:
            out.append(int(value))
        except (TypeError, ValueError):
            continue
    return out


def xdp_filter_failsafe(policy, prefix="xdp_filter_"):
    """{default_verdict, v4_rules, v6_rules, port_rules, mgmt_v4, mgmt_v6, mgmt_ports, mgmt_match} -> [reasons]."""
    if not isinstance(policy, Mapping):
        raise AnsibleFilterError("input %s: expected a dict (the xdp_filter policy)" % filter_rules.show(policy))
    problems = []
    mgmt = {family: filter_rules.management_networks(policy.get("mgmt_" + family), prefix + "mgmt_" + family) for family in ("v4", "v6")}
    ports = _ints(policy.get("mgmt_ports"))
    match_any = policy.get("mgmt_match", "ports") == "any"
    default = policy.get("default_verdict") or "pass"
    if default in filter_rules.BLOCKING:
        if not mgmt["v4"] and not mgmt["v6"]:
            problems.append(
                "%sdefault_verdict is %s but %smgmt_v4 and %smgmt_v6 are empty (and no controller address was added): "
                "nothing would keep SSH open" % (prefix, default, prefix, prefix)
            )
        elif not match_any and not ports:
            problems.append("%sdefault_verdict is %s but %smgmt_ports is empty: no management port would stay open" % (prefix, default, prefix))
    for family in ("v4", "v6"):
        name = prefix + family + "_rules"
        rules = policy.get(family + "_rules") or []
        if not isinstance(rules, list):
            continue
        for n, item in enumerate(rules):
            if not isinstance(item, Mapping) or item.get("action") not in filter_rules.BLOCKING:
                continue
            try:
                net = ipaddress.ip_network(str(item.get("cidr")).strip(), strict=False)
            except ValueError:
                continue
            hit = filter_rules.blocked_management_source(net, mgmt[family])
            if hit is not None:
                problems.append(
                    "%s[%d] %s would %s the management source %s (%smgmt_%s)" % (name, n, filter_rules.describe_rule(item), item["action"], hit, prefix, family)
                )
    port_rules = policy.get("port_rules") or []
    for n, item in enumerate(port_rules if isinstance(port_rules, list) else []):
        if not isinstance(item, Mapping) or item.get("proto") != "tcp" or item.get("action") not in filter_rules.BLOCKING:
            continue
        port = _ints([item.get("port")])
        if port and port[0] in ports:
            problems.append(
                "%sport_rules[%d] %s would %s the management port %d (%smgmt_ports)"
                % (prefix, n, filter_rules.describe_rule(item), item["action"], port[0], prefix)
            )
    return problems


class FilterModule:
    """ebpf.fleet.xdp_filter_failsafe"""

    def filters(self):
        return {"xdp_filter_failsafe": xdp_filter_failsafe}
