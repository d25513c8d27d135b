# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compile a BPF C source with clang on the controller, copy the object to the host, run the module.

The controller half of xdp_program and tc_program (their action plugins are
subclasses of ProgramAction). With ``src`` and ``compiler: controller`` (the
default), the source is found like ``template``'s (the role's or playbook's
``files/``), compiled locally (the flags of ``module_utils/programs/clang.py``: ``-O2 -g -target bpf``,
``defines`` as ``-D``, ``include_dirs`` and the collection's ``bpf/include`` as ``-I``, paths
mapped to fixed names so that the object is the same from any directory), copied into
the task's temporary folder on the host and handed to the module as
``object``, ``src`` kept for the record. A compile error fails the task
before the host is touched. Every other case runs the module unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from ansible import constants as C
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.ebpf.fleet.plugins.module_utils.programs import clang

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTION_INCLUDE = os.path.join(COLLECTION_ROOT, "bpf", "include")


def clang_args(clang_bin: str, src: str, out: str, defines: dict, include_dirs: list, arch: str) -> list:
    """The module's clang arguments (module_utils/programs/clang.py), plus the collection's headers, named
    ``ebpf_fleet/include`` in the object wherever the collection is installed."""
    try:
        return clang.command(
            clang_bin, src, out, defines, list(include_dirs) + [COLLECTION_INCLUDE], arch, named_dirs={COLLECTION_INCLUDE: "ebpf_fleet/include"}
        )
    except ValueError as exc:
        raise AnsibleActionFail(str(exc))


class ProgramAction(ActionBase):
    """Action plugin shared by xdp_program and tc_program; MODULE names the module it runs."""

    TRANSFERS_FILES = True
    MODULE = ""

    def _find_folder(self, folder: str) -> str:
        if os.path.isabs(folder):
            return folder
        try:
            return self._find_needle("files", folder)
        except AnsibleError:
            return folder

    def _compile(self, args: dict, workdir: str) -> str:
        try:
            src = self._find_needle("files", args["src"])
        except AnsibleError as exc:
            raise AnsibleActionFail("src=%s: not found on the controller (%s)" % (args["src"], exc))
        clang_bin = shutil.which("clang")
        if not clang_bin:
            raise AnsibleActionFail(
                "compiler=controller needs clang on the controller (Debian package clang); or set compiler: host to compile on the managed host"
            )
        includes = [self._find_folder(d) for d in args.get("include_dirs") or []]
        out = os.path.join(workdir, os.path.splitext(os.path.basename(src))[0] + ".o")
        cmd = clang_args(clang_bin, src, out, args.get("defines") or {}, includes, os.uname().machine)
        # in the source's folder, with the folders mapped to fixed names: the object does not depend on the
        # working directory, the collections path or the user (same source and options, same checksum)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=clang.cwd(src), env=dict(os.environ, LC_ALL="C"))
        if proc.returncode != 0:
            raise AnsibleActionFail(
                "compiling src=%s with clang on the controller failed (rc %d): %s" % (args["src"], proc.returncode, proc.stderr.strip()[-4000:]),
                result={"cmd": cmd, "stderr": proc.stderr},
            )
        return out

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        self._supports_async = False
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        compile_here = (
            args.get("src") and not args.get("object") and args.get("compiler", "controller") == "controller" and args.get("state", "present") == "present"
        )
        if not compile_here:
            result.update(self._execute_module(module_name=self.MODULE, module_args=args, task_vars=task_vars))
            self._remove_tmp_path(self._connection._shell.tmpdir)
            return result
        workdir = tempfile.mkdtemp(prefix="ebpf_fleet_", dir=C.DEFAULT_LOCAL_TMP)
        try:
            local_obj = self._compile(args, workdir)
            remote_obj = self._connection._shell.join_path(self._connection._shell.tmpdir, "object.o")
            self._transfer_file(local_obj, remote_obj)
            self._fixup_perms2((self._connection._shell.tmpdir, remote_obj))
            args["object"] = remote_obj
            result.update(self._execute_module(module_name=self.MODULE, module_args=args, task_vars=task_vars))
            result["compiled_on"] = "controller"
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
