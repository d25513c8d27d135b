"""One error type (errors.FleetError) and one translator (errors.failing) for every module, and the name and path
rules of validate.py."""

import errno
import inspect
import os
import pkgutil
import re
import subprocess

import pytest
from harness import paths

import ansible_collections.ebpf.fleet.plugins.module_utils as module_utils_pkg
from ansible_collections.ebpf.fleet.plugins.module_utils import errors, validate
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import attach, bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_sync
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import CodecError
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import loader


class FailJson(Exception):
    def __init__(self, result):
        super().__init__(result.get("msg"))
        self.result = result


class FakeModule:
    def fail_json(self, **result):
        raise FailJson(result)


def test_every_error_class_of_module_utils_derives_from_fleet_error_and_keeps_its_old_base():
    """About fifteen classes used to reach the modules unrelated: each is a FleetError now, and still the
    ValueError/OSError/... it was, so existing except clauses keep working."""
    found = {}
    for info in pkgutil.walk_packages(module_utils_pkg.__path__, module_utils_pkg.__name__ + "."):
        mod = __import__(info.name, fromlist=["x"])
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == mod.__name__ and issubclass(cls, BaseException):
                found[name] = cls
    assert len(found) >= 15, sorted(found)
    assert [name for name, cls in found.items() if not issubclass(cls, errors.FleetError)] == []
    assert issubclass(libbpf.BpfError, OSError) and issubclass(CodecError, ValueError)
    assert issubclass(bpffs.BpffsError, RuntimeError) and issubclass(attach.NoNativeXdp, attach.AttachError)


def test_no_code_matches_an_exception_by_its_class_name():
    pattern = re.compile(r"__class__\.__name__\s*==|type\([a-z_]+\)\.__name__\s*==|in str\(type\(")
    offenders = []
    for top, _dirs, files in os.walk(os.path.join(paths.REPO, "plugins")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(top, name)
                with open(path) as handle:
                    offenders += ["%s: %s" % (path, line.strip()) for line in handle if pattern.search(line)]
    assert offenders == []


def test_a_fleet_error_becomes_fail_json_with_its_details_and_extra_keys():
    module = FakeModule()
    with pytest.raises(FailJson) as err:
        with errors.failing(module, changed=False):
            raise errors.InputError("name='a b' is not a valid name: expected letters", field="name", value="a b", expected="letters", hint_key=1)
    assert err.value.result == {
        "msg": "name='a b' is not a valid name: expected letters",
        "field": "name",
        "value": "a b",
        "expected": "letters",
        "hint_key": 1,
        "changed": False,
    }


def test_subclass_attributes_become_result_keys_verifier_log_and_applied():
    module = FakeModule()
    with pytest.raises(FailJson) as err:
        with errors.failing(module):
            raise loader.LoadError("object: the verifier refused it", log="0: r0 = 1\ninvalid access")
    assert err.value.result["verifier_log"] == "0: r0 = 1\ninvalid access"
    with pytest.raises(FailJson) as err:
        with errors.failing(module):
            raise map_sync.SyncError("entries[3]: E2BIG", applied=2)
    assert err.value.result == {"msg": "entries[3]: E2BIG", "applied": 2}
    with pytest.raises(FailJson) as err:
        with errors.failing(module):
            raise libbpf.BpfError("bpf_prog_load", errno.EACCES, log="R1 invalid mem access")
    assert err.value.result["msg"] == "bpf_prog_load failed: Permission denied"
    assert err.value.result["verifier_log"] == "R1 invalid mem access"


def test_an_unknown_exception_ends_in_fail_json_with_a_short_message_and_its_type():
    module = FakeModule()
    with pytest.raises(FailJson) as err:
        with errors.failing(module):
            raise KeyError("x" * 100000)
    result = err.value.result
    assert result["exception_type"] == "KeyError"
    assert result["msg"].startswith("unexpected error (KeyError): ") and len(result["msg"]) < 500
    assert "Traceback" not in result["msg"]


def test_an_os_error_that_reached_the_module_names_its_file_and_the_errno():
    module = FakeModule()
    with pytest.raises(FailJson) as err:
        with errors.failing(module):
            os.rmdir("/proc/ebft-no-such-folder")
    assert "/proc/ebft-no-such-folder" in err.value.result["msg"]
    assert "(ENOENT)" in err.value.result["msg"] and err.value.result["exception_type"] == "FileNotFoundError"


def test_exit_and_fail_json_pass_through_the_translator():
    with pytest.raises(SystemExit):
        with errors.failing(FakeModule()):
            raise SystemExit(0)


def test_converting_names_the_step_the_errno_and_what_to_do():
    with pytest.raises(errors.KernelError) as err:
        with errors.converting("attaching program p to xdp@vb (bpf_link, mode native)", hint={errno.EBUSY: "detach the other program first"}):
            raise libbpf.BpfError("bpf_link_create", errno.EBUSY)
    assert str(err.value) == (
        "attaching program p to xdp@vb (bpf_link, mode native) failed: bpf_link_create failed: Device or resource busy (EBUSY); detach the other program first"
    )
    assert err.value.errno == errno.EBUSY and isinstance(err.value, OSError)
    with pytest.raises(
        errors.KernelError,
        match=r"pinning /sys/fs/bpf/x failed: Is a directory \(EISDIR\); "
        r"a folder is in the way; remove it",
    ):
        with errors.converting("pinning /sys/fs/bpf/x"):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")


def test_converting_lets_errors_with_their_own_message_through():
    with pytest.raises(attach.NoNativeXdp, match="^no native$"):
        with errors.converting("attaching"):
            raise attach.NoNativeXdp("no native")


def test_converting_turns_a_netlink_error_into_a_kernel_error():
    from pyroute2.netlink.exceptions import NetlinkError

    with pytest.raises(
        errors.KernelError,
        match=r"adding the clsact filter on tc_ingress@vb failed: File exists "
        r"\(EEXIST\); remove it",
    ):
        with errors.converting("adding the clsact filter on tc_ingress@vb", hint="remove it"):
            raise NetlinkError(errno.EEXIST, "File exists")


def test_a_huge_value_is_cut_in_the_result():
    result = errors.InputError("bad", field="name", value="y" * 100000, expected="short").result()
    assert len(result["value"]) < 300


# ---------------------------------------------------------------- validate.py


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("name", "a;rm -rf /", "name='a;rm -rf /' is not a valid name: expected 1 to 64 characters"),
        ("name", "..", "name='..' is not a valid name"),
        ("name", "a/b", "name='a/b' is not a valid name"),
        ("name", "a.b", "(no dots: bpffs refuses them)"),
        ("name", "n" * 65, "is not a valid name"),
        ("map", "$(reboot)", "map='$(reboot)' is not a valid name"),
    ],
)
def test_hostile_deployment_and_map_names_are_refused(field, value, message):
    with pytest.raises(errors.InputError, match=re.escape(message)) as err:
        validate.check_params({field: value})
    assert err.value.field == field and err.value.value == value


@pytest.mark.parametrize(
    "value, pinned, message",
    [
        ("eth0;ls", False, "interfaces: 'eth0;ls' is not an interface name: expected an interface name of 1 to 15"),
        ("..", False, "interfaces: '..' is not an interface name"),
        ("a/b", False, "interfaces: 'a/b' is not an interface name"),
        ("a" * 16, False, "(16 characters, longer than IFNAMSIZ allows)"),
        ("", False, "interfaces: '' is not an interface name"),
        ("eth0.100", True, "interfaces: 'eth0.100' cannot carry a program: expected an interface without a dot"),
    ],
)
def test_hostile_interface_names_are_refused(value, pinned, message):
    with pytest.raises(errors.InputError, match=re.escape(message)):
        validate.check_ifname("interfaces", value, pinned=pinned)


def test_a_vlan_interface_name_is_fine_where_nothing_is_pinned():
    assert validate.check_ifname("interfaces", "eth0.100", pinned=False) == "eth0.100"


@pytest.mark.parametrize(
    "value, message",
    [
        ("/tmp/pins", "pin_root='/tmp/pins' is not on a bpf filesystem: expected a folder on a mounted bpf filesystem"),
        ("/etc", "pin_root='/etc' is not on a bpf filesystem"),
        ("/sys/fs/bpf/../../../etc", "resolves to another folder: expected a path without '.' or '..' components"),
        ("relative/pins", "is relative: expected an absolute path"),
        ("/sys/fs/bpf", "is a bpffs mount point itself"),
        ("/sys/fs/bpf/my.pins", "has a folder name bpffs refuses"),
        ("/sys/fs/bpf/a\nb", "expected a path without control characters"),
        ("/sys/fs/bpf/" + "p" * 2000, "is too long: expected a path of at most 1024 characters"),
    ],
)
def test_pin_roots_outside_bpffs_or_resolving_elsewhere_are_refused(value, message):
    with pytest.raises(errors.InputError, match=re.escape(message)):
        validate.check_pin_root(value)


def test_the_default_pin_root_is_accepted_mounted_or_not():
    assert validate.check_pin_root(bpffs.PIN_ROOT_DEFAULT) == bpffs.PIN_ROOT_DEFAULT


@pytest.mark.parametrize(
    "value, message",
    [
        ("/", "is the root folder"),
        ("/proc/ebft", "is on a kernel file system"),
        ("/sys/fs/bpf/ebpf_fleet", "is on a kernel file system"),
        ("/var/lib/../../etc", "resolves to another folder"),
        ("state", "is relative"),
        ("/etc/passwd/state", "is not a folder: expected a folder (or a path to create one), but /etc/passwd is a file"),
    ],
)
def test_bad_state_dirs_are_refused(value, message):
    with pytest.raises(errors.InputError, match=re.escape(message)):
        validate.check_state_dir(value)


def test_a_state_dir_on_bpffs_is_refused(tmp_path):
    """Records are files: a bpffs (here one mounted for the test outside /sys) cannot hold them."""
    point = tmp_path / "bpf"
    point.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(point)], check=True)
    try:
        with pytest.raises(errors.InputError, match="is on a bpf filesystem"):
            validate.check_state_dir(str(point / "state"))
        assert validate.check_pin_root(str(point / "pins")) == str(point / "pins")
    finally:
        subprocess.run(["umount", str(point)], check=True)
