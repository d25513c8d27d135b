# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller half of ebpf.fleet.bpf_map: copies `entries_src` from the controller, then runs the module.

Large entry sets (a million CIDRs) travel as one file transfer into the task's temporary folder on the host,
never as task arguments; the module reads them from there as `entries_file`, and the folder is removed when
the task ends.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase

MODULE = "ebpf.fleet.bpf_map"


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        self._supports_async = False
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        try:
            if args.get("entries_src"):
                self._copy_entries(args, "entries_src", "entries-")
            if isinstance(args.get("maps"), list):
                args["maps"] = [dict(item) if isinstance(item, dict) else item for item in args["maps"]]
                for index, item in enumerate(args["maps"]):
                    if isinstance(item, dict) and item.get("entries_src"):
                        self._copy_entries(item, "maps[%d].entries_src" % index, "entries-%d-" % index)
            result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _copy_entries(self, args: dict, field: str, prefix: str) -> None:
        """Copy args' entries_src from the controller into the task's temporary folder; args then names the
        copy as entries_file."""
        for other in ("entries", "entries_file"):
            if args.get(other) is not None:
                raise AnsibleActionFail("%s and %s are mutually exclusive" % (field, field.replace("entries_src", other)))
        try:
            local = self._find_needle("files", args["entries_src"])
        except AnsibleError as exc:
            raise AnsibleActionFail("%s=%s: not found on the controller (%s)" % (field, args["entries_src"], exc))
        shell = self._connection._shell
        remote = shell.join_path(shell.tmpdir, prefix + os.path.basename(local))
        self._transfer_file(local, remote)
        self._fixup_perms2((shell.tmpdir, remote))
        args["entries_file"] = remote
