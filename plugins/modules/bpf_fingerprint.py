#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bpf_fingerprint
short_description: Tell in one call whether a host is still in the state the last full run of a declaration left
description:
  - Lets a re-run of an unchanged declaration skip the roles on a host that is intact. C(playbooks/deploy_xdp.yml)
    checks the fingerprint first on every host (V(checked)) and runs the roles only where it does not match; after
    a full run that ended well (confirmed, gates passed, every tag run) it records a new one (V(recorded)).
  - 'The fingerprint (C(<state_dir>/.fingerprint.json)) matches when all of these hold: O(digest) is the recorded
    one (the controller computes it with P(ebpf.fleet.declaration_digest#filter) from the collection''s files, the
    host''s role variables and the controller files they name); no checkpoint of M(ebpf.fleet.bpf_checkpoint) is
    pending; the deployment records are byte for byte the recorded ones (a rollback, a revert, a restore at boot
    or another play changes them); the files in O(files) have their recorded checksums and the units in O(units)
    are enabled and active where systemd runs the host; and the kernel holds what the records say for every
    deployment (the programs on their hooks in order and mode, the declared map contents), as M(ebpf.fleet.bpf_info)
    with C(check_records) tells it.'
  - It never changes the host's functions. V(recorded) writes only the fingerprint file; V(absent) removes it, so
    that the next run is a full one.
version_added: "0.3.0"
author: ebpf.fleet contributors (@ebpf-fleet)
extends_documentation_fragment:
  - ebpf.fleet.attributes
  - ebpf.fleet.paths
attributes:
  check_mode:
    support: full
    details: V(checked) runs as usual (it writes nothing); V(recorded) and V(absent) write nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: linux
options:
  state:
    description:
      - V(checked) compares the host with its recorded fingerprint and returns RV(matches) and RV(reasons);
        V(recorded) records the host as it is now under O(digest); V(absent) removes the fingerprint.
    type: str
    default: checked
    choices: [checked, recorded, absent]
  digest:
    description:
      - The controller's digest of the host's declaration, a hexadecimal string of 16 to 128 digits (what
        P(ebpf.fleet.declaration_digest#filter) returns). Required with V(checked) and V(recorded).
      - With V(checked), an empty string never matches (the filter returns one when it could not read a file the
        declaration names); V(recorded) refuses it.
    type: str
  files:
    description:
      - With V(recorded), files on the host whose checksums the fingerprint keeps (what the roles installed, as
        the fact C(bpf_host_installed.files) of P(ebpf.fleet.bpf_host#role) lists them). Absolute paths.
    type: list
    elements: path
    default: []
  units:
    description:
      - With V(recorded), systemd units that must be enabled and active for the fingerprint to match (checked only
        where systemd runs the host).
    type: list
    elements: str
    default: []
notes:
  - A fingerprint never makes a run skip a change of the declaration; it makes a run skip the roles when nothing
    was declared differently and nothing on the host moved. Where it does not match, the roles run and repair
    what differs, as they always do. Set C(deploy_xdp_fast_rerun=false) to run the roles on every host anyway.
seealso:
  - module: ebpf.fleet.bpf_info
  - plugin: ebpf.fleet.declaration_digest
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Look whether the host is already in its declared state
  ebpf.fleet.bpf_fingerprint:
    digest: "{{ my_declaration | ebpf.fleet.declaration_digest }}"
  register: fingerprint

- name: Deploy the filter (only where the fingerprint does not match)
  ansible.builtin.include_role:
    name: ebpf.fleet.xdp_filter
  when: not fingerprint.matches

- name: Record the fingerprint after the change
  ebpf.fleet.bpf_fingerprint:
    state: recorded
    digest: "{{ my_declaration | ebpf.fleet.declaration_digest }}"
    files: "{{ bpf_host_installed.files | default([]) }}"
    units: "{{ bpf_host_installed.units | default([]) }}"
  when: not fingerprint.matches
"""

RETURN = r"""
matches:
  description: With V(checked), whether the host is in the state the recorded fingerprint describes for O(digest).
  returned: always
  type: bool
  sample: true
reasons:
  description:
    - With V(checked), why it does not match (up to 5, of the first kind of check that failed); empty when it does.
  returned: always
  type: list
  elements: str
  sample: ["filter: xdp@eth0 is not attached (another program runs there)"]
digest:
  description: O(digest), as given (a later V(recorded) task can take it from the registered V(checked) result).
  returned: always
  type: str
  sample: 3f0c5bd3a8a4e2f0c1d9b7e6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6
fingerprint:
  description: The fingerprint file.
  returned: always
  type: str
  sample: /var/lib/ebpf_fleet/.fingerprint.json
"""

import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ebpf.fleet.plugins.module_utils import errors, shared_options, validate
from ansible_collections.ebpf.fleet.plugins.module_utils.host import checkpoint, fingerprint, records

_DIGEST = re.compile(r"^[0-9a-f]{16,128}$")


def argument_spec() -> dict:
    spec = shared_options.argument_spec()
    spec.update(
        state=dict(type="str", default="checked", choices=["checked", "recorded", "absent"]),
        digest=dict(type="str"),
        files=dict(type="list", elements="path", default=[]),
        units=dict(type="list", elements="str", default=[]),
    )
    return spec


def build_module() -> AnsibleModule:
    return AnsibleModule(
        argument_spec=argument_spec(), supports_check_mode=True, required_if=[("state", "checked", ["digest"]), ("state", "recorded", ["digest"])]
    )


def main() -> None:
    module = build_module()
    with errors.failing(module):
        run(module)


def _check(module: AnsibleModule) -> None:
    params = module.params
    validate.check_params({"state_dir": params["state_dir"], "pin_root": params["pin_root"]})
    digest = params["digest"]
    if digest is not None and not _DIGEST.match(digest) and not (digest == "" and params["state"] == "checked"):
        module.fail_json(msg="digest=%s: expected 16 to 128 lowercase hexadecimal digits (ebpf.fleet.declaration_digest)" % errors.short_repr(digest))
    for name in params["files"]:
        if not name.startswith("/"):
            module.fail_json(msg="files: %s: expected an absolute path" % errors.short_repr(name))
    for unit in params["units"]:
        if not re.match(r"^[A-Za-z0-9:_.@-]+$", unit):
            module.fail_json(msg="units: %s: expected a systemd unit name" % errors.short_repr(unit))


def run(module: AnsibleModule) -> None:
    _check(module)
    params = module.params
    state, state_dir = params["state"], params["state_dir"]
    where = fingerprint.path(state_dir)
    result = dict(changed=False, matches=False, reasons=[], fingerprint=where, digest=params["digest"] or "")
    if state == "checked":
        if not params["digest"]:
            result["reasons"] = ["no digest: the controller could not read a file the declaration names"]
        else:
            result["reasons"] = fingerprint.check(state_dir, params["pin_root"], params["digest"], checkpoint.read_pending(state_dir))
            result["matches"] = not result["reasons"]
        module.exit_json(**result)
    if module.check_mode:
        module.exit_json(**result)
    with records.locked(state_dir, create=state == "recorded", activity=False):
        if state == "recorded":
            fingerprint.write(state_dir, fingerprint.build(state_dir, params["digest"], params["files"], params["units"]))
        else:
            fingerprint.remove(state_dir)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
