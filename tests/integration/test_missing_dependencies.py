"""A host without libbpf or pyroute2 gets a message naming the package to install, not a traceback."""

import pytest
from harness import paths, runner

pytestmark = pytest.mark.kernel

HIDE_LIBBPF = '''
import ctypes, ctypes.util
_find, _CDLL = ctypes.util.find_library, ctypes.CDLL
def find_library(name):
    return None if name == "bpf" else _find(name)
class CDLL(_CDLL):
    def __init__(self, name, *args, **kwargs):
        if name and "libbpf" in str(name):
            raise OSError("%s: cannot open shared object file: No such file or directory" % name)
        super().__init__(name, *args, **kwargs)
ctypes.util.find_library, ctypes.CDLL = find_library, CDLL
'''

HIDE_PYROUTE2 = '''
import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "pyroute2" or name.startswith("pyroute2."):
            raise ImportError("No module named %r" % name)
        return None
sys.meta_path.insert(0, _Hide())
'''


@pytest.fixture
def host_without(tmp_path, monkeypatch, netns):
    """Run modules in a namespace under a Python where one dependency cannot be imported or loaded."""

    def prepare(code):
        (tmp_path / "sitecustomize.py").write_text(code)
        base_env = runner.module_env

        def env():
            result = base_env()
            result["PYTHONPATH"] = str(tmp_path) + ":" + result["PYTHONPATH"]
            return result

        monkeypatch.setattr(runner, "module_env", env)
        ns = netns("dep")
        ns.veth("va", "vb")
        return ns

    return prepare


def program_args(pin_root, state_dir, **extra):
    args = dict(name="dep", object=paths.bpf_object("xdp_count"), interfaces=["va"], pin_root=pin_root, state_dir=state_dir)
    args.update(extra)
    return args


@pytest.mark.parametrize("module", ["xdp_program", "tc_program", "bpf_map", "bpf_info", "xdp_support"])
def test_missing_libbpf_names_the_package(module, host_without, pin_root, state_dir):
    ns = host_without(HIDE_LIBBPF)
    args = {
        "xdp_program": program_args(pin_root, state_dir),
        "tc_program": program_args(pin_root, state_dir, object=paths.bpf_object("tc_count"), direction="egress"),
        "bpf_map": dict(path=pin_root + "/missing", entries={}),
        "bpf_info": {},
        "xdp_support": {"interfaces": ["va"]},
    }[module]
    result = runner.run_module(module, args, netns=ns)
    assert result.failed
    assert "libbpf1" in result["msg"] and "Traceback" not in result["_stderr"]


@pytest.mark.parametrize("module", ["xdp_program", "xdp_support", "bpf_info"])
def test_missing_pyroute2_names_the_package(module, host_without, pin_root, state_dir):
    ns = host_without(HIDE_PYROUTE2)
    args = {"xdp_program": program_args(pin_root, state_dir), "xdp_support": {}, "bpf_info": {}}[module]
    result = runner.run_module(module, args, netns=ns)
    assert result.failed
    assert "pyroute2" in result["msg"] and "python3-pyroute2" in result["msg"]
