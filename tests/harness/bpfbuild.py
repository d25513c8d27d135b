"""Compile a fixture from tests/bpf/ the way `make bpf` does, for variants (extra -D) or before `make bpf` ran."""

import os
import subprocess

from . import paths

_BUILT = {}


def compile_fixture(name: str, **defines) -> str:
    """tests/bpf/<name>.c compiled with `make bpf`'s flags plus -DKEY=VALUE; once per test run and variant."""
    tag = "".join("-%s=%s" % item for item in sorted(defines.items()))
    if (name, tag) in _BUILT:
        return _BUILT[(name, tag)]
    out_dir = os.path.join(paths.BUILD, "bpf", "variants")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, "%s%s.o" % (name, tag))
    cmd = ["clang", "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-I" + paths.BPF_INCLUDE, "-I/usr/include/%s-linux-gnu" % os.uname().machine]
    cmd += ["-D%s=%s" % item for item in sorted(defines.items())]
    cmd += ["-c", os.path.join(paths.REPO, "tests", "bpf", name + ".c"), "-o", out]
    subprocess.run(cmd, check=True)
    _BUILT[(name, tag)] = out
    return out


def compile_like_xdp_program(src: str, out: str, *flags, **defines) -> subprocess.CompletedProcess:
    """src compiled with the clang arguments xdp_program uses for its `defines` option (module_utils/programs/clang.py),
    plus extra `flags`; the caller checks the result."""
    from ansible_collections.ebpf.fleet.plugins.module_utils.programs import clang  # pylint: disable=import-outside-toplevel

    cmd = clang.command("clang", src, out, defines, [paths.BPF_INCLUDE], os.uname().machine) + list(flags)
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=clang.cwd(src))
