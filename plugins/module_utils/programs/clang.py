# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place that builds clang's arguments for a BPF object (controller, host and bcc compiles).

``make bpf`` uses the same base flags plus ``-Wall -Werror`` (a unit test checks the Makefile agrees).

The object must not depend on where it was compiled: clang records the working directory
(DW_AT_comp_dir), the paths of the source and of every header (debug info, BTF line info,
``__FILE__``). So the working directory is recorded as ``.`` and every folder that holds a
source or header is mapped to a fixed name: the same source with the same options gives the
same object, byte for byte, from any directory, checkout, collections path or user.
"""

from __future__ import annotations

import os
import re

BASE_FLAGS = ["-O2", "-g", "-target", "bpf"]
MACRO_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# characters clang would not take as part of a -D value: a newline ends the definition (the rest becomes
# code), a trailing backslash joins the next definition, other control characters are not C source
_BAD_VALUE_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def system_include(arch: str) -> str:
    return "-I/usr/include/%s-linux-gnu" % arch


def define_flags(defines: dict) -> list:
    """-D flags in name order; raises ValueError naming the define for a bad name or value."""
    flags = []
    for key, value in sorted((defines or {}).items(), key=lambda item: str(item[0])):
        if not isinstance(key, str) or not MACRO_NAME.match(key):
            raise ValueError("defines: %r is not a C macro name (letters, digits and '_', not starting with a digit)" % (key,))
        if value is None or value is True:
            flags.append("-D%s" % key)
            continue
        if isinstance(value, (dict, list, tuple, set)):
            raise ValueError("defines: %s=%r: expected a string, a number, true or null, got a %s" % (key, value, type(value).__name__))
        text = str(value)
        bad = _BAD_VALUE_CHARS.search(text)
        if bad or text.endswith("\\"):
            what = "a trailing backslash" if not bad else "the control character %r" % bad.group(0)
            raise ValueError(
                "defines: %s=%r holds %s, which clang would not keep in the definition (it would "
                "cut the value or join it with the next line); expected a value on one line" % (key, text[:80], what)
            )
        flags.append("-D%s=%s" % (key, text))
    return flags


def include_flags(include_dirs: list) -> list:
    return ["-I%s" % folder for folder in include_dirs]


def prefix_maps(paths: dict) -> list:
    """-ffile-prefix-map flags for {folder: fixed name}, shortest folder first (clang and gcc then both
    take the longest matching folder), and the working directory recorded as '.'."""
    flags = ["-fdebug-compilation-dir=."]
    seen = set()
    for folder, name in sorted(paths.items(), key=lambda item: (len(item[0]), item[0])):
        folder = os.path.normpath(folder)
        if folder in seen or folder == "/":
            continue
        seen.add(folder)
        flags.append("-ffile-prefix-map=%s=%s" % (folder, name))
    return flags


def stable_names(src: str, include_dirs: list, named: dict = None) -> dict:
    """{folder: fixed name}: the source's folder is '.', include folder i is 'include<i>' unless named."""
    paths = {}
    for index, folder in enumerate(include_dirs):
        paths[os.path.abspath(folder)] = "include%d" % index
    for folder, name in (named or {}).items():
        paths[os.path.abspath(folder)] = name
    paths[os.path.dirname(os.path.abspath(src))] = "."
    return paths


def command(clang: str, src: str, out: str, defines: dict, include_dirs: list, arch: str, named_dirs: dict = None) -> list:
    """clang's argument list for a BPF object from src; the same on the controller and on the host.

    src is passed by its file name: run the command with cwd= the source's folder (see cwd()).
    named_dirs maps include folders to fixed names (the controller names the collection's headers)."""
    cmd = [clang] + BASE_FLAGS + ["-c", os.path.basename(src), "-o", out]
    cmd += prefix_maps(stable_names(src, include_dirs, named_dirs))
    cmd += include_flags([os.path.abspath(folder) for folder in include_dirs])
    cmd.append(system_include(arch))
    cmd += define_flags(defines)
    return cmd


def cwd(src: str) -> str:
    """The folder to run clang in (the source's)."""
    return os.path.dirname(os.path.abspath(src))


def bcc_flags(defines: dict, include_dirs: list) -> list:
    """bcc's cflags (bcc sets the target and optimisation itself): the same -I and -D as clang's."""
    return include_flags(include_dirs) + define_flags(defines)
