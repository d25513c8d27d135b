"""The collection's XDP objects speak libxdp's multi-program protocol, and the modules never clobber libxdp.

This kernel has no `ext` program type, so libxdp's dispatcher cannot load here: xdp-loader falls back to one
program per interface. The dispatcher case is covered by a test that fakes what cannot exist on this machine
(the `ext` probe and a dispatcher's pins), and says so.
"""

import os

import pytest
from harness import paths

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import attach, btf, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import deploy

pytestmark = pytest.mark.kernel

XDP_OBJECTS = [("xdp_filter", 20), ("xdp_lb", 50)]


def run_config(obj_name: str) -> tuple:
    """({member: number}, variable name) of the object's libxdp run configuration (its `.xdp_run_config` BTF)."""
    with libbpf.BpfObject.open(paths.bpf_object(obj_name)) as obj:
        types = btf.Btf.parse(obj.btf_raw())
    names = list(types.datasec_vars(".xdp_run_config"))
    assert len(names) == 1, names
    name = names[0]
    var = next(t for t in types.types if t.kind == btf.KIND_VAR and t.name == name)
    struct = types.type(var.type_id)
    # libxdp encodes each setting as `int (*name)[value]`, as __uint() does for map definitions
    return {m.name: types.type(types.type(m.type_id).type_id).nelems for m in struct.members}, name


@pytest.mark.parametrize("obj_name,priority", XDP_OBJECTS)
def test_objects_declare_libxdp_priority_and_chain_actions(obj_name, priority):
    config, var_name = run_config(obj_name)
    assert var_name == "_" + obj_name  # libxdp looks the configuration up by the program's name
    assert config == {"priority": priority, "XDP_PASS": 1}


@pytest.mark.parametrize("obj_name,_priority", XDP_OBJECTS)
def test_xdp_loader_loads_our_objects_and_xdp_program_refuses_to_clobber_them(obj_name, _priority, netns, pin_root, state_dir, run_module):
    ns = netns("xl")
    ns.veth("va", "vb")
    loaded = ns.run(["xdp-loader", "load", "-m", "native", "vb", paths.bpf_object(obj_name)], check=False)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    try:
        status = ns.run(["xdp-loader", "status", "vb"]).stdout
        assert obj_name in status and "native" in status
        res = run_module(
            "xdp_program", dict(name="fleet", object=paths.bpf_object("xdp_count"), interfaces=["vb"], pin_root=pin_root, state_dir=state_dir), netns=ns
        )
        assert res.failed and "did not attach" in res["msg"] and "vb" in res["msg"], res
        assert obj_name in ns.run(["xdp-loader", "status", "vb"]).stdout  # still there, untouched
    finally:
        ns.run(["xdp-loader", "unload", "vb", "--all"], check=False)


def test_an_interface_held_by_the_libxdp_dispatcher_is_refused_by_name(monkeypatch, tmp_path):
    # Faked: this kernel cannot load libxdp's dispatcher (no `ext`), so the probe and the dispatcher's pin
    # folder are simulated; the decision code is the real one.
    monkeypatch.setattr(attach, "ext_supported", lambda: True)
    os.makedirs(tmp_path / "dispatch-7-42")
    monkeypatch.setattr(attach, "LIBXDP_PIN_GLOB", str(tmp_path / "dispatch-%d-*"))
    with pytest.raises(deploy.DeployError) as err:
        deploy._check_foreign_xdp("eth7", 7)  # pylint: disable=protected-access
    assert "eth7" in str(err.value) and "libxdp" in str(err.value) and "xdp-loader" in str(err.value)
