#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: tc_program
short_description: Load, attach and atomically replace TC (sched_cls) programs on ingress or egress
description:
  - Attaches one TC program (a deployment) to the ingress or egress hook of interfaces, in priority order with the
    other programs of the collection on the same hook.
  - Uses a TCX bpf_link where the kernel has TCX (probed), otherwise a direct-action C(bpf) filter under the
    C(clsact) qdisc. The qdisc is created only when absent and removed only when this collection created it and no
    filter is left on it; filters of other tools are never touched.
  - Idempotent (compares the attached programs, their order and attach method, and the recorded object checksum),
    atomic on upgrade (one bpf_link update, or one C(tc filter replace) of the collection's own filter), and
    state-preserving (compatible maps are reused from their pins).
  - A program that fails the verifier fails the task with the end of the verifier log; nothing changes.
version_added: "0.1.0"
author: ebpf.fleet contributors (@ebpf-fleet)
extends_documentation_fragment:
  - ebpf.fleet.attributes
  - ebpf.fleet.deployment
  - ebpf.fleet.paths
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    support: full
    platforms: linux
options:
  direction:
    description:
      - The hook, V(ingress) or V(egress). A deployment stays on one direction; use another O(name) for the other.
    type: str
    choices: [ingress, egress]
    default: ingress
  attach:
    description:
      - V(tcx) uses a TCX bpf_link (fails on kernels without TCX), V(clsact) a direct-action filter under the clsact
        qdisc, V(auto) TCX where the kernel has it and clsact otherwise.
      - With V(auto), a hook that already runs a chain keeps its attach method.
      - All programs of the collection on one hook share one attach method.
    type: str
    choices: [auto, tcx, clsact]
    default: auto
"""

EXAMPLES = r"""
- name: Drop UDP to port 9999 leaving the uplink (TCX where the kernel has it)
  ebpf.fleet.tc_program:
    name: egress_guard
    object: /opt/bpf/tc_drop_udp.o
    direction: egress
    interfaces: [ens3]

- name: Force the clsact filter path (for kernels or tools that expect tc filters)
  ebpf.fleet.tc_program:
    name: egress_guard
    object: /opt/bpf/tc_drop_udp.o
    direction: egress
    attach: clsact
    interfaces: [ens3]
    priority: 10

- name: Compile on the controller and put a counter behind the guard
  ebpf.fleet.tc_program:
    name: egress_count
    src: files/tc_count.c
    direction: egress
    interfaces: [ens3]
    priority: 20

- name: Remove the counter (the guard keeps running)
  ebpf.fleet.tc_program:
    name: egress_count
    direction: egress
    state: absent
"""

RETURN = r"""
name:
  description: The deployment's name.
  returned: always
  type: str
  sample: egress_guard
hook:
  description: The hook, V(tc_ingress) or V(tc_egress).
  returned: always
  type: str
  sample: tc_egress
state:
  description: The requested state.
  returned: always
  type: str
  sample: present
attachments:
  description: Per interface, the chain after the run (or as predicted in check mode); V(method) is V(link) for
    TCX and V(clsact) for the filter.
  returned: always
  type: dict
  sample:
    ens3:
      hook: tc_egress
      mode: null
      method: link
      action: attach
      chain:
        - {position: 1, deployment: egress_guard, priority: 50, program: tc_drop_udp, prog_id: 97,
           tag: 1c2f0b3a9d7e4411, sha256: 4be1a0}
maps:
  description: Maps of the deployment, V(reused) from pins, V(created), V(incompatible) with the new object,
    V(obsolete) (pinned, no longer declared; removed).
  returned: always
  type: dict
  sample: {reused: [tc_drops], created: [], incompatible: [], obsolete: []}
record:
  description: The deployment record written under O(state_dir).
  returned: changed and state=present
  type: dict
  sample: {name: egress_guard, object_sha256: 4be1a0, version: 1, interfaces: [ens3]}
applied:
  description: Per hook, what was done (action, method, whether the clsact qdisc was created, reattached).
  returned: changed and not check mode
  type: dict
  sample: {"tc_egress@ens3": {action: attach, mode: "", method: clsact, qdisc_created: true, reattached: false}}
verifier_log:
  description: The end of the verifier log when a program failed to load.
  returned: failed
  type: str
  sample: "0: (61) r2 = *(u32 *)(r1 +76)\n...\ninvalid access to packet"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ebpf.fleet.plugins.module_utils import errors
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import program_module


def argument_spec() -> dict:
    spec = program_module.common_argument_spec()
    spec.update(
        direction=dict(type="str", default="ingress", choices=["ingress", "egress"]),
        attach=dict(type="str", default="auto", choices=["auto", "tcx", "clsact"]),
    )
    return spec


def build_module() -> AnsibleModule:
    return AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)


def main() -> None:
    module = build_module()
    with errors.failing(module):
        program_module.run(module, "tc_" + module.params["direction"], tc_attach=module.params["attach"])


if __name__ == "__main__":
    main()
