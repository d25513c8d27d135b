#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: xdp_program
short_description: Load, attach and atomically replace XDP programs
description:
  - Attaches one XDP program (a deployment) to interfaces, in priority order with the other programs of the
    collection on the same interface.
  - Idempotent (compares the attached programs, their order and mode, and the recorded object checksum), atomic on
    upgrade (one bpf_link update), and state-preserving (compatible maps are reused from their pins).
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
  mode:
    description:
      - V(native) (driver), V(generic) (skb), V(offload) (NIC), or V(auto) = native, falling back to generic only
        when O(allow_generic_fallback) is true.
      - All programs on one interface share one mode.
    type: str
    choices: [native, generic, offload, auto]
    default: native
  allow_generic_fallback:
    description:
      - With O(mode=auto), use generic mode on interfaces without native XDP (reported as a warning).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Drop unwanted UDP on the uplinks, from an object built in CI
  ebpf.fleet.xdp_program:
    name: udp_guard
    object: /opt/bpf/udp_guard.o
    interfaces: [ens3, ens4]
    priority: 10

- name: Compile on the controller and attach behind the guard
  ebpf.fleet.xdp_program:
    name: counter
    src: files/xdp_count.c
    include_dirs: [files/include]
    defines:
      MAX_PORTS: 64
    interfaces: [ens3]
    priority: 20
    mode: auto
    allow_generic_fallback: true

- name: Remove it (the other programs on ens3 keep running)
  ebpf.fleet.xdp_program:
    name: counter
    state: absent
"""

RETURN = r"""
name:
  description: The deployment's name.
  returned: always
  type: str
  sample: udp_guard
hook:
  description: The hook (V(xdp)).
  returned: always
  type: str
  sample: xdp
state:
  description: The requested state.
  returned: always
  type: str
  sample: present
attachments:
  description: Per interface, the chain after the run (or as predicted in check mode).
  returned: always
  type: dict
  sample:
    ens3:
      hook: xdp
      mode: native
      method: link
      action: update
      chain:
        - {position: 1, deployment: udp_guard, priority: 10, program: xdp_guard, prog_id: 812, tag: 3b185187f1855c4c,
           sha256: 9f2c0d}
maps:
  description: Maps of the deployment, V(reused) from pins, V(created), V(incompatible) with the new object,
    V(obsolete) (pinned, no longer declared; removed).
  returned: always
  type: dict
  sample: {reused: [hits], created: [], incompatible: [], obsolete: []}
record:
  description: The deployment record written under O(state_dir).
  returned: changed and state=present
  type: dict
  sample: {name: udp_guard, object_sha256: 9f2c0d, version: 2, interfaces: [ens3]}
applied:
  description: Per hook, what was done (action, mode, method, fallback, reattached).
  returned: changed and not check mode
  type: dict
  sample: {"xdp@ens3": {action: update, mode: native, method: link, fallback: false, reattached: false}}
verifier_log:
  description: The end of the verifier log when a program failed to load.
  returned: failed
  type: str
  sample: "0: (61) r2 = *(u32 *)(r1 +4)\n...\ninvalid access to packet"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ebpf.fleet.plugins.module_utils import errors
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import program_module


def argument_spec() -> dict:
    spec = program_module.common_argument_spec()
    spec.update(
        mode=dict(type="str", default="native", choices=["native", "generic", "offload", "auto"]),
        allow_generic_fallback=dict(type="bool", default=False),
    )
    return spec


def build_module() -> AnsibleModule:
    return AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)


def main() -> None:
    module = build_module()
    with errors.failing(module):
        program_module.run(module, "xdp", mode=module.params["mode"], allow_fallback=module.params["allow_generic_fallback"])


if __name__ == "__main__":
    main()
