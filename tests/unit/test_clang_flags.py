"""clang's arguments come from one place (module_utils/programs/clang.py) for the controller, the host, bcc and `make bpf`;
defines clang would cut are refused naming the define."""

import os
import re
import shlex
import shutil
import subprocess

import pytest
from harness import paths

from ansible_collections.ebpf.fleet.plugins.module_utils.programs import bcc_load, clang
from ansible_collections.ebpf.fleet.plugins.plugin_utils import compile as controller_compile


def makefile_bpf_cflags() -> list:
    with open(os.path.join(paths.REPO, "Makefile"), encoding="utf-8") as handle:
        line = re.search(r"^BPF_CFLAGS\s*:=\s*(.*)$", handle.read(), re.M).group(1)
    return shlex.split(line.replace("$(shell uname -m)", "ARCH"))


def test_makefile_bpf_cflags_are_the_modules_flags_plus_warnings():
    flags = makefile_bpf_cflags()
    assert flags[: len(clang.BASE_FLAGS)] == clang.BASE_FLAGS
    rest = flags[len(clang.BASE_FLAGS) :]
    assert rest[:2] == ["-Wall", "-Werror"]
    assert rest[2:] == ["-I$(ROOT)/bpf/include", clang.system_include("ARCH")]


def test_controller_host_and_bcc_share_the_define_and_include_flags():
    defines, includes = {"PORT": 53, "DEBUG": None, "NAME": "a b"}, ["/inc"]
    host = clang.command("clang", "/p/x.c", "/o/x.o", defines, includes, "x86_64")
    ctl = controller_compile.clang_args("clang", "/p/x.c", "/o/x.o", defines, includes, "x86_64")
    bcc = bcc_load.cflags(defines, includes)
    assert host[1:5] == ctl[1:5] == clang.BASE_FLAGS
    for flag in bcc:
        assert flag in host and flag in ctl
    assert bcc == ["-I/inc", "-DDEBUG", "-DNAME=a b", "-DPORT=53"]
    assert "-I%s" % controller_compile.COLLECTION_INCLUDE in ctl


def test_paths_are_recorded_relative_to_fixed_names():
    cmd = clang.command(
        "clang", "/src/dir/x.c", "/tmp/o/x.o", {}, ["/src/dir/include", "/other"], "x86_64", named_dirs={"/coll/bpf/include": "ebpf_fleet/include"}
    )
    assert "-fdebug-compilation-dir=." in cmd
    maps = [flag for flag in cmd if flag.startswith("-ffile-prefix-map=")]
    # shortest first: the longest matching folder wins in clang and gcc
    assert maps == [
        "-ffile-prefix-map=/other=include1",
        "-ffile-prefix-map=/src/dir=.",
        "-ffile-prefix-map=/src/dir/include=include0",
        "-ffile-prefix-map=/coll/bpf/include=ebpf_fleet/include",
    ]
    assert clang.cwd("/src/dir/x.c") == "/src/dir"


@pytest.mark.parametrize(
    "value, what",
    [
        ("53\n#define EVIL 1", "control character '\\\\n'"),
        ("a\rb", "control character '\\\\r'"),
        ("x\\", "trailing backslash"),
        ("tab\there", "control character '\\\\t'"),
    ],
)
def test_define_value_clang_would_cut_is_refused_naming_the_define(value, what):
    for build in (lambda d: clang.command("clang", "/p/x.c", "/o/x.o", d, [], "x86_64"), lambda d: bcc_load.cflags(d, [])):
        with pytest.raises(ValueError, match="defines: DROP_PORT=.*%s" % what):
            build({"DROP_PORT": value})


def test_define_value_of_a_structure_is_refused():
    with pytest.raises(ValueError, match=r"defines: X=\[1, 2\]: expected a string, a number, true or null"):
        clang.define_flags({"X": [1, 2]})


def compile_in(tmp_path, checkout: str, workdir: str, collection: str) -> bytes:
    """tests/bpf/xdp_drop_udp.c copied into a checkout, the collection's headers into a collections path,
    compiled with the modules' arguments while the test runs in workdir."""
    src_dir = tmp_path / checkout / "files"
    src_dir.mkdir(parents=True)
    for name in ("xdp_drop_udp.c", "drop_udp.h"):
        shutil.copy(os.path.join(paths.REPO, "tests", "bpf", name), src_dir / name)
    include = tmp_path / collection / "bpf" / "include"
    shutil.copytree(paths.BPF_INCLUDE, include)
    (tmp_path / workdir).mkdir(parents=True, exist_ok=True)
    os.chdir(tmp_path / workdir)
    out = tmp_path / checkout / "out.o"
    cmd = clang.command(
        shutil.which("clang"),
        str(src_dir / "xdp_drop_udp.c"),
        str(out),
        {"DROP_PORT": 53},
        [str(include)],
        os.uname().machine,
        named_dirs={str(include): "ebpf_fleet/include"},
    )
    subprocess.run(cmd, check=True, cwd=clang.cwd(str(src_dir / "xdp_drop_udp.c")))
    return out.read_bytes()


def test_the_same_source_gives_the_same_object_from_any_checkout_and_collections_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if not shutil.which("clang"):
        pytest.skip("clang is not installed")
    one = compile_in(tmp_path, "a", "w1", "c1")
    two = compile_in(tmp_path, "b/deeper/checkout", "w2/x", "c2/other/path")
    assert one == two
    assert str(tmp_path).encode() not in one
