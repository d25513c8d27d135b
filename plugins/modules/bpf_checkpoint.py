#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bpf_checkpoint
short_description: Commit-confirmed changes of a host's XDP and TC deployments, and rollback to earlier versions
description:
  - Brackets a change of the host's deployments the way C(commit confirmed) does on a router. V(armed) takes a
    checkpoint of every deployment's records (programs, chain positions and modes, declared map contents) and
    starts a watchdog on the host; unless the controller confirms within O(timeout) seconds after the change's last
    step, the watchdog puts the checkpoint back by itself. That catches the change that cuts the controller off.
  - A step is a module run of this collection that held the host's records lock (M(ebpf.fleet.xdp_program),
    M(ebpf.fleet.bpf_map), ...); each one starts the window again. Before the first step (while the controller
    still prepares the change, for example converting a large rules file) nothing changed and no window counts.
  - V(confirmed) and V(committed) are run from the controller over a B(fresh) connection (the action plugin closes a
    persistent SSH connection first and keeps trying through the window, since attaching XDP resets the link for
    1 to 10 seconds on some NIC drivers). V(confirmed) stops the watchdog and keeps the checkpoint, so that a
    failed health gate can still revert; V(committed) makes the change the new state and files the records it
    replaced in each deployment's history.
  - V(reverted) puts the armed checkpoint back now (a task of the change failed). V(rolled_back) returns each
    deployment of O(names) (every deployment with a history when empty) to its previous committed version; a
    deployment that did not exist before is removed.
  - A host that was reverted makes V(confirmed) and V(committed) fail with what was rolled back and why.
  - The watchdog starts with the change (when the first module run of this collection that holds the host's records
    lock ends), as a transient systemd unit where systemd runs, else as a detached process; a controller that dies
    before the change starts leaves no process behind. After a confirm, a commit or a revert nothing stays armed
    (no unit, process or checkpoint files). A host that
    restarts inside the window reverts at boot (C(ebpf-fleet-host restore), docs/restore.md).
version_added: "0.2.0"
author: ebpf.fleet contributors (@ebpf-fleet)
extends_documentation_fragment:
  - ebpf.fleet.attributes
  - ebpf.fleet.paths
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
    details: V(confirmed) and V(committed) open a fresh connection, and retry it through the window.
  check_mode:
    support: full
    details: V(armed) arms nothing; V(reverted) and V(rolled_back) report what they would bring back.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: linux
options:
  state:
    description:
      - V(armed) takes the checkpoint and starts the watchdog; V(confirmed) stops it (the controller reached the
        host again); V(committed) confirms and files the replaced records in the history; V(reverted) puts the
        checkpoint back now; V(rolled_back) returns deployments to their previous committed version.
    type: str
    required: true
    choices: [armed, confirmed, committed, reverted, rolled_back]
  token:
    description:
      - The checkpoint's RV(token), as V(armed) returned it; required with V(confirmed) and V(committed).
      - With V(reverted), the checkpoint to revert (any armed one when empty).
      - An empty token (from V(armed) in check mode) makes V(confirmed), V(committed) and V(reverted) do nothing.
    type: str
    default: ""
  timeout:
    description:
      - Seconds after the change's last step within which the controller must confirm, else the host reverts.
      - With V(confirmed) and V(committed), the controller keeps trying to reach the host for this long plus 15
        seconds.
    type: int
    default: 60
  reason:
    description:
      - With V(reverted), why (shown in the revert's report and in the failure of a later confirm).
    type: str
    default: ""
  names:
    description:
      - With V(rolled_back), the deployments to roll back; every deployment with a history when empty.
    type: list
    elements: str
    default: []
notes:
  - Records are replaced by rename and never written in place, so the checkpoint is a tree of hard links and takes
    no copy of a large map's entries.
  - Maps that are not declared (counters, connection tables) keep their contents through a revert unless the
    change replaced them.
seealso:
  - module: ebpf.fleet.xdp_program
  - module: ebpf.fleet.bpf_map
  - name: Safe rollouts (docs/rollouts.md)
    description: Waves, health gates, confirm windows, rollback and recovering a host by hand.
    link: https://github.com/ebpf-fleet/ebpf.fleet/blob/main/docs/rollouts.md
"""

EXAMPLES = r"""
- name: Arm a revert of everything this play changes unless the controller confirms within 60 s
  ebpf.fleet.bpf_checkpoint:
    state: armed
    timeout: 60
  register: checkpoint

- name: Change the filter (a rule that might cut the controller off)
  ebpf.fleet.bpf_map:
    name: filter
    map: filter_v4
    entries: "{{ rules }}"
    mode: sync

- name: Confirm over a fresh connection and make the change the new state
  ebpf.fleet.bpf_checkpoint:
    state: committed
    token: "{{ checkpoint.token }}"
    timeout: 60

- name: Return the filter to its previous version
  ebpf.fleet.bpf_checkpoint:
    state: rolled_back
    names: [filter]
"""

RETURN = r"""
token:
  description: The checkpoint's token (V(armed)); pass it to the later states. Empty in check mode.
  returned: always
  type: str
  sample: 4f1c2a9e0b7d4e21
armed:
  description: When the checkpoint was armed (UTC).
  returned: state is armed and not in check mode
  type: str
  sample: "2026-12-02T05:40:12Z"
deployments:
  description: The deployments in the checkpoint (V(armed)); those the change altered (V(committed)).
  returned: state is armed or committed
  type: list
  elements: str
  sample: [filter]
earlier:
  description: What V(armed) did with a checkpoint an earlier run left (V(reverted) or V(committed)).
  returned: state is armed
  type: dict
  sample: {}
attempts:
  description: Connections the controller opened before the host answered (V(confirmed), V(committed)).
  returned: state is confirmed or committed
  type: int
  sample: 1
reverted:
  description:
    - What a revert did, per deployment (V(removed), V(restored) with its V(version) and V(object_sha256),
      V(unchanged) or V(failed)), why, and when. In the failure of V(confirmed) and V(committed) too, when the
      watchdog had reverted the host.
  returned: state is reverted, or the host was reverted
  type: dict
  sample:
    reason: "not confirmed within 60s of the last change at 2026-12-02T05:41:02Z"
    reverted: "2026-12-02T05:42:02Z"
    deployments: {filter: {status: restored, version: 3}}
rolled_back:
  description: Per deployment, the history entry it returned to and what that did (V(restored) or V(removed)).
  returned: state is rolled_back
  type: dict
  sample: {filter: {status: restored, version: 2, history: 4}}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ebpf.fleet.plugins.module_utils import errors, shared_options, validate
from ansible_collections.ebpf.fleet.plugins.module_utils.host import checkpoint, records


def argument_spec() -> dict:
    spec = shared_options.argument_spec()
    spec.update(
        state=dict(type="str", required=True, choices=["armed", "confirmed", "committed", "reverted", "rolled_back"]),
        token=dict(type="str", default="", no_log=False),
        timeout=dict(type="int", default=checkpoint.TIMEOUT_DEFAULT),
        reason=dict(type="str", default=""),
        names=dict(type="list", elements="str", default=[]),
    )
    return spec


def build_module() -> AnsibleModule:
    return AnsibleModule(
        argument_spec=argument_spec(), supports_check_mode=True, required_if=[("state", "confirmed", ["token"]), ("state", "committed", ["token"])]
    )


def main() -> None:
    module = build_module()
    with errors.failing(module):
        run(module)


def _check(module: AnsibleModule) -> None:
    params = module.params
    validate.check_params({"state_dir": params["state_dir"], "pin_root": params["pin_root"]})
    for name in params["names"]:
        validate.check_name("names", name)
    if not 1 <= params["timeout"] <= 86400:
        module.fail_json(msg="timeout=%r: expected seconds between 1 and 86400" % params["timeout"])
    token = params["token"]
    if token and not (len(token) <= 64 and token.isalnum()):
        module.fail_json(msg="token=%s: expected the token state=armed returned (letters and digits)" % (errors.short_repr(token)))


def run(module: AnsibleModule) -> None:
    _check(module)
    params = module.params
    state, state_dir, token = params["state"], params["state_dir"], params["token"]
    if state == "armed":
        if module.check_mode:
            module.exit_json(changed=False, token="")
        with records.locked(state_dir, activity=False):
            pending = checkpoint.arm(state_dir, params["timeout"], params["reason"])
        module.exit_json(changed=False, token=pending["token"], armed=pending["armed"], deployments=pending["deployments"], earlier=pending["earlier"])
    if state in ("confirmed", "committed"):
        if not token:
            module.exit_json(changed=False, token="", deployments=[])
        with records.locked(state_dir, create=False, activity=False):
            try:
                pending = checkpoint.confirm(state_dir, token)
                altered = checkpoint.commit(state_dir, pending) if state == "committed" else []
            except checkpoint.Reverted as exc:
                module.fail_json(msg=str(exc), token=token, reverted=exc.report)
        module.exit_json(changed=False, token=token, deployments=altered)
    if state == "reverted":
        pending = checkpoint.read_pending(state_dir)
        if not pending or (token and pending.get("token") != token):
            module.exit_json(changed=False, token=token, reverted={})
        if module.check_mode:
            altered = checkpoint.changed_names(state_dir, os.path.join(checkpoint.folder(state_dir), checkpoint.SNAPSHOT))
            module.exit_json(changed=bool(altered), token=pending["token"], reverted={"deployments": {name: {"status": "would revert"} for name in altered}})
        with records.locked(state_dir, create=False, activity=False):
            report = checkpoint.revert(state_dir, params["reason"] or "reverted on request", pending=pending)
        failed = report["failed"]
        result = dict(changed=any(res["status"] != "unchanged" for res in report["deployments"].values()), token=pending["token"], reverted=report)
        if failed:
            module.fail_json(
                msg="the revert could not bring back %s: %s" % (", ".join(failed), "; ".join(report["deployments"][name]["error"] for name in failed)), **result
            )
        module.exit_json(**result)
    # rolled_back
    plan = checkpoint.rollback_plan(state_dir, params["names"])
    missing = [name for name in params["names"] if name not in plan]
    if missing:
        module.fail_json(
            msg="names: %s has no earlier version on this host (the history in %s holds %s)"
            % (", ".join(missing), os.path.join(state_dir, checkpoint.HISTORY), ", ".join(sorted(checkpoint.rollback_plan(state_dir))) or "nothing")
        )
    if module.check_mode or not plan:
        module.exit_json(
            changed=bool(plan),
            token="",
            rolled_back={name: {"status": "would restore" if path else "would remove", "history": seq} for name, (seq, path) in plan.items()},
        )
    with records.locked(state_dir, create=False, activity=False):
        results = checkpoint.rollback(state_dir, plan)
    for name, (seq, _path) in plan.items():
        results[name]["history"] = seq
    failed = sorted(name for name, res in results.items() if res["status"] == "failed")
    if failed:
        module.fail_json(
            msg="rollback could not bring back %s: %s" % (", ".join(failed), "; ".join(results[name]["error"] for name in failed)), rolled_back=results
        )
    module.exit_json(changed=True, token="", rolled_back=results)


if __name__ == "__main__":
    main()
