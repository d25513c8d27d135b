# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller half of ebpf.fleet.bpf_checkpoint: confirm over a fresh connection, retried through the window.

A confirm must prove that the controller can reach the host *again*, the way a new SSH session would after
the change: the persistent connection (SSH ControlPersist) that carried the change is closed first, and each
attempt opens a new one. A change that cuts the controller off makes every attempt fail until the host's
watchdog reverts it; the next attempt then reaches the host and the module fails with what was rolled back.
"""

from __future__ import annotations

import time

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.action import ActionBase

MODULE = "ebpf.fleet.bpf_checkpoint"
GRACE = 15  # seconds past the host's window: its revert, and the link coming back
RETRY_DELAY = 2


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        self._supports_async = False
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        if args.get("state") not in ("confirmed", "committed") or not args.get("token"):
            result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
            return result
        try:
            window = int(args.get("timeout", 60))
        except (TypeError, ValueError):
            return dict(result, failed=True, msg="timeout=%r: expected seconds between 1 and 86400" % args.get("timeout"))
        started = time.monotonic()
        deadline = started + window + GRACE
        attempts, last_error = 0, ""
        while True:
            attempts += 1
            try:
                # a fresh connection: what a new session after the change would need
                self._connection.reset()
                answer = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
                break
            except AnsibleConnectionFailure as exc:
                last_error = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            if time.monotonic() + RETRY_DELAY > deadline:
                return dict(
                    result,
                    failed=True,
                    attempts=attempts,
                    msg=(
                        "the controller could not reach the host over a fresh connection for %ds after the change "
                        "(%d attempts; last: %s); the host should have reverted it by itself %ds after its last step: "
                        "check it by hand (docs/rollouts.md)" % (int(time.monotonic() - started), attempts, last_error, window)
                    ),
                )
            time.sleep(RETRY_DELAY)
        result.update(answer)
        result["attempts"] = attempts
        if attempts > 1 and not answer.get("failed"):
            result["unreachable_for"] = round(time.monotonic() - started, 1)
        return result
