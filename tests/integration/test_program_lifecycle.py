"""xdp_program / tc_program over a deployment's life: records that keep counting and follow every option, runs
that write nothing (check mode, removing what was never deployed, also after a reboot), folder modes, and input
refused before anything changes (hostile names, defines clang would cut, offload on a device without it)."""

import json
import os
import stat
import subprocess
import time
from types import SimpleNamespace

import pytest
from harness import bpffs as harness_bpffs
from harness import paths
from harness.bpfbuild import compile_fixture

pytestmark = pytest.mark.kernel

SRC = os.path.join(paths.REPO, "tests", "bpf")


def tree(*roots) -> list:
    """Every path under the roots (the roots included when they exist), with its mode."""
    found = []
    for root in roots:
        if not os.path.lexists(root):
            continue
        found.append((root, oct(os.lstat(root).st_mode & 0o7777)))
        for top, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(top, name)
                found.append((path, oct(os.lstat(path).st_mode & 0o7777)))
    return sorted(found)


def xdp_prog_id(ns, ifname="vb"):
    link = json.loads(ns.ip("-j", "-d", "link", "show", ifname).stdout)[0]
    return link.get("xdp", {}).get("prog", {}).get("id", 0)


@pytest.fixture
def lab(netns, pin_root, tmp_path):
    """rx holds vb (a veth, peer va in tx); the pin root and state dir do not exist yet."""
    tx, rx = netns("tx"), netns("rx")
    tx.veth("va", "vb", peer_ns=rx, addr_a="198.51.100.1/24", addr_b="198.51.100.2/24")
    fresh_pins = os.path.join(pin_root, "fresh", "root")
    fresh_state = str(tmp_path / "var" / "state")
    base = dict(interfaces=["vb"], pin_root=fresh_pins, state_dir=fresh_state)
    return SimpleNamespace(tx=tx, rx=rx, pin_root=fresh_pins, state_dir=fresh_state, pin_base=pin_root, args=lambda **kw: dict(base, **kw))


def record(lab, name="guard"):
    with open(os.path.join(lab.state_dir, name, "deployment.json"), encoding="utf-8") as handle:
        return json.load(handle)


# ---------------------------------------------------------------- records


def test_version_keeps_counting_after_ten_versions_are_kept(lab, run_module):
    objects = [paths.bpf_object("xdp_drop_udp"), compile_fixture("xdp_drop_udp", VERSION=2)]
    for run in range(1, 13):
        res = run_module("xdp_program", lab.args(name="guard", object=objects[run % 2]), netns=lab.rx)
        assert res.changed and not res.failed, res
        assert res["record"]["version"] == run
    rec = record(lab)
    assert rec["version"] == 12 and len(rec["versions"]) == 10
    assert [v["version"] for v in rec["versions"]] == list(range(3, 13))
    again = run_module("xdp_program", lab.args(name="guard", object=objects[0]), netns=lab.rx)
    assert not again.changed and record(lab)["version"] == 12


def test_a_change_of_any_recorded_option_updates_the_record(lab, run_module, tmp_path):
    args = lab.args(name="guard", object=paths.bpf_object("xdp_drop_udp"), mode="auto")
    assert run_module("xdp_program", args, netns=lab.rx).changed
    assert record(lab)["allow_generic_fallback"] is False
    # native XDP works on veth: the fallback flag changes nothing in the kernel, only the record
    res = run_module("xdp_program", dict(args, allow_generic_fallback=True), netns=lab.rx, diff=True)
    assert res.changed and not res.failed, res
    assert record(lab)["allow_generic_fallback"] is True
    assert res["diff"]["before"]["options"] == {"allow_generic_fallback": False}
    assert res["diff"]["after"]["options"] == {"allow_generic_fallback": True}
    assert record(lab)["version"] == 1  # same object: same version
    assert not run_module("xdp_program", dict(args, allow_generic_fallback=True), netns=lab.rx).changed

    # compiled on the host: the compiler and the include folders are recorded and followed too
    src = os.path.join(SRC, "xdp_drop_udp.c")
    host = lab.args(name="guard", src=src, compiler="host", mode="auto", allow_generic_fallback=True, include_dirs=[paths.BPF_INCLUDE])
    assert run_module("xdp_program", host, netns=lab.rx).changed
    assert record(lab)["compiler"] == "host"
    assert not run_module("xdp_program", host, netns=lab.rx).changed
    extra = tmp_path / "more_headers"
    extra.mkdir()
    res = run_module("xdp_program", dict(host, include_dirs=[paths.BPF_INCLUDE, str(extra)]), netns=lab.rx)
    assert res.changed and not res.failed, res
    assert record(lab)["include_dirs"] == [paths.BPF_INCLUDE, str(extra)]


# ---------------------------------------------------------------- runs that write nothing


def test_absent_of_a_name_never_deployed_creates_no_folder_and_no_lock(lab, run_module, tmp_path):
    res = run_module("xdp_program", lab.args(name="never", state="absent"), netns=lab.rx)
    assert not res.changed and not res.failed, res
    assert tree(lab.pin_base) == [(lab.pin_base, "0o700")]
    assert not os.path.exists(os.path.dirname(lab.state_dir))
    # with the folders there (another deployment), still no lock file and nothing new
    assert run_module("xdp_program", lab.args(name="guard", object=paths.bpf_object("xdp_drop_udp")), netns=lab.rx).changed
    before = tree(lab.pin_base, lab.state_dir)
    assert not run_module("xdp_program", lab.args(name="never", state="absent"), netns=lab.rx).changed
    assert not run_module("tc_program", lab.args(name="never", state="absent", direction="ingress"), netns=lab.rx).changed
    assert tree(lab.pin_base, lab.state_dir) == before
    assert not [path for path, _mode in before if path.endswith(".lock")]


def test_check_mode_on_a_host_never_deployed_predicts_and_creates_nothing(lab, run_module):
    res = run_module("xdp_program", lab.args(name="guard", object=paths.bpf_object("xdp_drop_udp")), netns=lab.rx, check_mode=True, diff=True)
    assert res.changed and not res.failed, res
    assert res["attachments"]["vb"]["action"] == "attach"
    assert res["diff"]["after"]["xdp@vb"][0].endswith("(to be loaded)")
    res = run_module("tc_program", lab.args(name="count", object=paths.bpf_object("tc_count"), direction="ingress"), netns=lab.rx, check_mode=True)
    assert res.changed and not res.failed, res
    assert tree(lab.pin_base) == [(lab.pin_base, "0o700")]
    assert not os.path.exists(os.path.dirname(lab.state_dir))
    assert xdp_prog_id(lab.rx) == 0


def test_check_mode_after_a_reboot_predicts_the_reload(lab, run_module):
    """A reboot keeps the records (disk) and loses the pins and attachments (bpffs, the kernel)."""
    args = lab.args(name="guard", object=paths.bpf_object("xdp_drop_udp"))
    assert run_module("xdp_program", args, netns=lab.rx).changed
    harness_bpffs.remove_pin_root(lab.pin_root)  # the link's pin goes: the kernel detaches the program
    for _attempt in range(50):
        if not xdp_prog_id(lab.rx):
            break
        time.sleep(0.1)
    assert xdp_prog_id(lab.rx) == 0
    before = tree(lab.pin_base, lab.state_dir)
    res = run_module("xdp_program", args, netns=lab.rx, check_mode=True, diff=True)
    assert res.changed and not res.failed, res
    assert res["attachments"]["vb"]["action"] == "attach"
    assert tree(lab.pin_base, lab.state_dir) == before
    res = run_module("xdp_program", args, netns=lab.rx)
    assert res.changed and not res.failed and xdp_prog_id(lab.rx), res


def test_check_mode_mounts_no_bpffs(netns, tmp_path):
    """In a mount namespace without bpffs (a host after boot), check mode leaves /sys/fs/bpf unmounted."""
    ns = netns("mnt")
    ns.veth("va", "vb")
    args = {
        "name": "guard",
        "object": paths.bpf_object("xdp_drop_udp"),
        "interfaces": ["vb"],
        "state_dir": str(tmp_path / "state"),
        "_ansible_check_mode": True,
    }
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    script = (
        "umount /sys/fs/bpf 2>/dev/null; nsenter --net=/run/netns/%s %s -m "
        "ansible_collections.ebpf.fleet.plugins.modules.xdp_program %s; echo; grep -c ' /sys/fs/bpf bpf ' /proc/self/mounts"
        % (ns.name, paths.PYTHON, args_file)
    )
    env = dict(os.environ, PYTHONPATH=paths.COLLECTIONS)
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script], capture_output=True, text=True, env=env, check=False, timeout=120
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) >= 2, proc.stdout + proc.stderr
    result = json.loads(proc.stdout[proc.stdout.index("{") : proc.stdout.rindex("}") + 1])
    assert result["changed"] and not result.get("failed"), proc.stdout + proc.stderr
    assert lines[-1] == "0", "check mode mounted bpffs"
    assert not os.path.exists(tmp_path / "state")


# ---------------------------------------------------------------- folders


def test_folders_under_the_pin_root_and_state_dir_are_0700(lab, run_module):
    assert run_module("xdp_program", lab.args(name="guard", object=paths.bpf_object("xdp_drop_udp")), netns=lab.rx).changed
    assert run_module("tc_program", lab.args(name="count", object=paths.bpf_object("tc_count"), direction="ingress"), netns=lab.rx).changed
    entries = tree(lab.pin_base, lab.state_dir)
    folders = {path: mode for path, mode in entries if stat.S_ISDIR(os.lstat(path).st_mode)}
    assert os.path.join(lab.pin_root, "guard", "progs") in folders
    assert set(folders.values()) == {"0o700"}, folders
    files = {path: mode for path, mode in entries if path not in folders}
    assert files and set(files.values()) == {"0o600"}, files


# ---------------------------------------------------------------- refused before anything changes


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../../etc", "x;touch /tmp/pwn", "a" * 65, "", "-x", "a b"])
def test_hostile_deployment_names_are_refused_before_anything_changes(lab, run_module, name):
    res = run_module("xdp_program", lab.args(name=name, object=paths.bpf_object("xdp_drop_udp")), netns=lab.rx)
    assert res.failed and "name=" in res["msg"] and "expected 1 to 64 characters" in res["msg"], res
    res = run_module("xdp_program", lab.args(name=name, state="absent"), netns=lab.rx)
    assert res.failed and "name=" in res["msg"], res
    assert tree(lab.pin_base) == [(lab.pin_base, "0o700")]
    assert not os.path.exists(os.path.dirname(lab.state_dir))


@pytest.mark.parametrize("value", ["9999\n#define EVIL 1", "9999\\", "99\r99"])
def test_a_define_clang_would_cut_is_refused_naming_it(lab, run_module, value):
    src = os.path.join(SRC, "xdp_drop_udp.c")
    res = run_module("xdp_program", lab.args(name="guard", src=src, compiler="host", defines={"DROP_PORT": value}), netns=lab.rx)
    assert res.failed and res["msg"].startswith("defines: DROP_PORT="), res
    assert "Traceback" not in res["_stderr"]
    assert xdp_prog_id(lab.rx) == 0 and not os.path.exists(os.path.dirname(lab.state_dir))


def test_offload_on_a_device_that_cannot_says_so(lab, run_module):
    args = lab.args(name="guard", object=paths.bpf_object("xdp_drop_udp"), mode="offload")
    for check in (True, False):
        res = run_module("xdp_program", args, netns=lab.rx, check_mode=check)
        assert res.failed and not res.changed, res
        assert "mode=offload: interface vb (driver veth) cannot run XDP programs on the NIC" in res["msg"], res
        assert "hw_offload" in res["msg"] and "use mode: native" in res["msg"]
    assert xdp_prog_id(lab.rx) == 0
    assert not os.path.exists(os.path.join(lab.pin_root, "guard"))
