"""Failures of the kernel layer reach the operator as a failed task with a message, never as a traceback.

Each message names what was being done, the object and the interface or path, the error, and what to do.
Real failures where this machine can produce them (a clsact filter conflict, a pin rename onto a folder, a
foreign XDP program making the attach EBUSY); where the timing cannot be produced for real, the test says so
and injects the condition inside the module's own process.
"""

import json
import os
import subprocess
import tempfile
from types import SimpleNamespace

import pytest
from harness import paths
from harness.runner import ModuleResult, module_env

pytestmark = pytest.mark.kernel


def obj(name):
    return paths.bpf_object(name)


@pytest.fixture
def lab(netns, pin_root, state_dir):
    ns = netns("kf")
    ns.veth("va", "vb", addr_a="192.0.2.1/24", addr_b="192.0.2.2/24")
    base = dict(interfaces=["vb"], pin_root=pin_root, state_dir=state_dir)
    return SimpleNamespace(ns=ns, pin_root=pin_root, state_dir=state_dir, args=lambda **kw: dict(base, **kw))


def run_patched(module: str, args: dict, patch: str, netns) -> ModuleResult:
    """Run ebpf.fleet.<module> as its own process (as run_module does), after `patch` (Python source) ran in
    that process: how a condition the kernel cannot be made to show on cue is injected."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=False, _ansible_diff=False)}, handle)
        args_path = handle.name
    script = "\n".join(
        [
            "import sys",
            patch,
            "from ansible_collections.ebpf.fleet.plugins.modules import %s as target" % module,
            "target.main()",
        ]
    )
    cmd = ["nsenter", "--net=/run/netns/%s" % netns.name, paths.PYTHON, "-c", script, args_path]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=module_env(), cwd=paths.REPO, check=False)
    finally:
        os.unlink(args_path)
    out = proc.stdout.strip()
    try:
        result = json.loads(out[out.index("{") :])
    except ValueError:
        result = {"failed": True, "msg": "module printed no JSON"}
    result = ModuleResult(result)
    result["_stdout"], result["_stderr"] = proc.stdout, proc.stderr
    return result


def assert_clean_failure(res, *parts):
    assert res.failed, res
    output = res["_stdout"] + res["_stderr"]
    assert "Traceback" not in output, output
    for part in parts:
        assert part in res["msg"], res["msg"]


def xdp_ids(ns):
    link = json.loads(ns.ip("-j", "-d", "link", "show", "vb").stdout)[0]
    return link.get("xdp", {}).get("prog", {}).get("id", 0)


def test_clsact_filter_conflict_fails_naming_the_hook_the_errno_and_the_fix(lab, run_module):
    """Real: another tool's bpf filter holds the priority and handle the collection uses on clsact ingress; the
    kernel refuses the add with EEXIST (it used to reach the operator as a NetlinkError traceback)."""
    lab.ns.run(["tc", "qdisc", "add", "dev", "vb", "clsact"])
    lab.ns.run(["tc", "filter", "add", "dev", "vb", "ingress", "prio", "61934", "handle", "1", "bpf", "da", "obj", obj("tc_count"), "sec", "tc"])
    before = lab.ns.run(["tc", "-j", "filter", "show", "dev", "vb", "ingress"]).stdout
    res = run_module("tc_program", lab.args(name="guard", object=obj("tc_drop_udp"), attach="clsact", direction="ingress"), netns=lab.ns)
    assert_clean_failure(res, "attaching program", "tc_ingress@vb", "clsact filter", "(EEXIST)", "tc filter del dev vb ingress prio 61934")
    assert lab.ns.run(["tc", "-j", "filter", "show", "dev", "vb", "ingress"]).stdout == before


def test_pin_rename_onto_a_folder_fails_naming_the_pin_and_leaves_no_program_attached(lab, run_module):
    """Real: a folder sits where the hook's link pin goes, so rename(2) of the new pin fails with EISDIR (an
    OSError traceback before). The link was never pinned, so closing it detaches the program again."""
    blocker = os.path.join(lab.pin_root, "_hooks", "xdp@vb", "link")
    os.makedirs(blocker)
    res = run_module("xdp_program", lab.args(name="guard", object=obj("xdp_drop_udp")), netns=lab.ns)
    assert_clean_failure(res, "pinning %s failed: Is a directory (EISDIR); a folder is in the way" % blocker)
    assert xdp_ids(lab.ns) == 0
    assert not [name for name in os.listdir(os.path.dirname(blocker)) if "_tmp" in name]


def test_xdp_attach_ebusy_from_a_foreign_program_fails_naming_the_interface_and_the_fix(lab):
    """The kernel's EBUSY is real; its timing is injected: another tool attaches an XDP program right after the
    module's plan found the interface free (the race the plan-time check cannot close), by running the plan's
    check and then `ip link set dev vb xdpgeneric obj ...` inside the module's process."""
    patch = "\n".join(
        [
            "import subprocess",
            "from ansible_collections.ebpf.fleet.plugins.module_utils.programs import deploy",
            "original = deploy._check_foreign_xdp",
            "def racing(ifname, ifindex):",
            "    original(ifname, ifindex)",
            "    subprocess.run(['ip', 'link', 'set', 'dev', ifname, 'xdpgeneric', 'obj', %r, 'sec', 'xdp'], check=True)" % obj("xdp_plain_pass"),
            "deploy._check_foreign_xdp = racing",
        ]
    )
    res = run_patched("xdp_program", lab.args(name="guard", object=obj("xdp_drop_udp"), mode="generic"), patch, lab.ns)
    assert_clean_failure(res, "attaching program", "xdp@vb", "(EBUSY)", "ip link set dev vb xdp off")
    foreign = xdp_ids(lab.ns)
    assert foreign, "the foreign program must still be attached"
    lab.ns.ip("link", "set", "dev", "vb", "xdpgeneric", "off")


def test_an_unexpected_exception_ends_in_a_failed_result_with_its_type_not_a_traceback(lab):
    """Injected (no real input reaches a bug on purpose): the plan raises a KeyError, as a bug would."""
    patch = "\n".join(
        [
            "from ansible_collections.ebpf.fleet.plugins.module_utils.programs import deploy",
            "def broken(req, info):",
            "    raise KeyError('ifindex')",
            "deploy.plan = broken",
        ]
    )
    res = run_patched("xdp_program", lab.args(name="guard", object=obj("xdp_drop_udp")), patch, lab.ns)
    assert_clean_failure(res, "unexpected error (KeyError): 'ifindex'", "run with -vvv for the traceback")
    assert res["exception_type"] == "KeyError"


def test_an_os_error_from_the_file_system_names_the_path(lab):
    """Injected: the state folder cannot be created (a read-only file system is not available to the tests),
    raised where records.locked creates it."""
    patch = "\n".join(
        [
            "import errno, os",
            "from ansible_collections.ebpf.fleet.plugins.module_utils.host import records",
            "real = os.makedirs",
            "def readonly(path, *args, **kwargs):",
            "    if path == %r:" % os.path.join(tempfile.gettempdir(), "ebft-ro-state"),
            "        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)",
            "    return real(path, *args, **kwargs)",
            "records.os.makedirs = readonly",
        ]
    )
    state = os.path.join(tempfile.gettempdir(), "ebft-ro-state")
    res = run_patched("xdp_program", lab.args(name="guard", object=obj("xdp_drop_udp"), state_dir=state), patch, lab.ns)
    assert_clean_failure(res, state, "(EROFS)", "the file system is read-only")
    assert not os.path.exists(state)


def test_bpf_map_kernel_errors_and_bad_pins_fail_cleanly(lab, run_module):
    """Real: a program (not a map) pinned where a map is expected, and a regular folder given as a pin."""
    res = run_module("xdp_program", lab.args(name="guard", object=obj("xdp_drop_udp")), netns=lab.ns)
    assert res.changed and not res.failed, res
    prog_pin = os.path.join(lab.pin_root, "guard", "progs", "xdp@vb")
    res = run_module("bpf_map", dict(path=prog_pin, entries=[{"key": 0, "value": 1}]), netns=lab.ns)
    assert_clean_failure(res, "is not a BPF map")
    res = run_module("bpf_map", dict(path=os.path.join(lab.pin_root, "guard", "maps"), entries=[{"key": 0, "value": 1}]), netns=lab.ns)
    assert res.failed and "Traceback" not in res["_stdout"] + res["_stderr"], res
    assert run_module("xdp_program", lab.args(name="guard", state="absent"), netns=lab.ns).changed


@pytest.mark.parametrize("module", ["xdp_program", "bpf_info"])
def test_a_record_that_is_not_json_fails_naming_the_file(lab, run_module, module):
    """Real: a damaged record under state_dir (it used to end in a ValueError traceback or a bare message)."""
    folder = os.path.join(lab.state_dir, "guard")
    os.makedirs(folder)
    with open(os.path.join(folder, "deployment.json"), "w") as handle:
        handle.write("{not json")
    args = lab.args(name="guard", object=obj("xdp_drop_udp")) if module == "xdp_program" else dict(pin_root=lab.pin_root, state_dir=lab.state_dir)
    res = run_module(module, args, netns=lab.ns)
    assert_clean_failure(res, "record %s/deployment.json is not valid JSON" % folder, "remove its folder")
    assert res["field"] == "state_dir"
    assert xdp_ids(lab.ns) == 0


def test_bpffs_mount_refused_fails_naming_the_mount_point_and_the_fix(lab, tmp_path):
    """Real: in a private mount namespace where /sys/fs/bpf is not mounted, the module runs without
    CAP_SYS_ADMIN, so its mount(2) of bpffs is refused with EPERM. Nothing is mounted on the machine."""
    args_path = tmp_path / "args.json"
    pin_root = "/sys/fs/bpf/%s" % os.path.basename(lab.pin_root)
    args_path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(lab.args(name="guard", object=obj("xdp_drop_udp"), pin_root=pin_root))}))
    module = "ansible_collections.ebpf.fleet.plugins.modules.xdp_program"
    inner = (
        "while mountpoint -q /sys/fs/bpf; do umount /sys/fs/bpf; done; exec nsenter --net=/run/netns/%s "
        "capsh --drop=cap_sys_admin -- -c 'exec %s -m %s %s'" % (lab.ns.name, paths.PYTHON, module, args_path)
    )
    before = open("/proc/self/mounts").read().count(" bpf ")
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", inner],
        capture_output=True,
        text=True,
        timeout=300,
        env=module_env(),
        cwd=paths.REPO,
        check=False,
    )
    out = proc.stdout.strip()
    res = ModuleResult(json.loads(out[out.index("{") :]) if "{" in out else {"failed": True, "msg": out})
    res["_stdout"], res["_stderr"] = proc.stdout, proc.stderr
    assert_clean_failure(
        res, "cannot mount bpffs at /sys/fs/bpf: Operation not permitted", "mount it yourself (mount -t bpf bpf /sys/fs/bpf) or run the task as root"
    )
    assert open("/proc/self/mounts").read().count(" bpf ") == before
