"""ebpf.fleet.xdp_support on the real kernel, inside namespaces the tests create.

What the operator sees: which interfaces run XDP natively, which only in
generic mode, why, and that `require` / `probe` behave as documented.
"""

import json

import pytest
from harness import paths

pytestmark = pytest.mark.kernel


@pytest.fixture
def lab(netns):
    """A namespace with a veth pair, a bridge, a macvlan on the veth and a tun device."""
    ns = netns("xs")
    ns.veth("va", "vb")
    ns.bridge("br0")
    ns.macvlan("mv0", parent="va")
    ns.tun("tun0")
    return ns


def ip_xdp(ns, ifname):
    """What `ip -j link` shows about XDP on ifname: (mode number, prog id) or (0, 0)."""
    link = json.loads(ns.run(["ip", "-j", "link", "show", "dev", ifname]).stdout)[0]
    xdp = link.get("xdp")
    if not xdp:
        return 0, 0
    return xdp["mode"], xdp["prog"]["id"]


def test_veth_is_native_and_bridge_macvlan_tun_are_generic_only(lab, run_module):
    res = run_module("xdp_support", {}, netns=lab)
    assert not res.failed, res
    ifs = res["interfaces"]
    assert set(ifs) == {"va", "vb", "br0", "mv0", "tun0"}, "loopback is left out by default"
    assert ifs["va"]["driver"] == "veth"
    assert ifs["va"]["native"]["supported"] == "yes"
    assert "basic" in ifs["va"]["xdp_features"]
    assert ifs["va"]["recommended_mode"] == "native" and ifs["va"]["verdict"] == "native"
    for name, driver in (("br0", "bridge"), ("mv0", "macvlan"), ("tun0", "tun")):
        report = ifs[name]
        assert report["driver"] == driver
        # this kernel (6.18) reports its xdp-features: an empty set means no native XDP
        assert report["native"]["supported"] in ("no", "unknown"), (name, report["native"])
        assert report["native"]["reason"]
        assert report["generic"]["supported"] == "yes"
        assert report["recommended_mode"] == "generic"
    assert sorted(res["native_interfaces"]) == ["va", "vb"]
    assert res["verdict"] == "generic"
    assert res["changed"] is False


def test_kernel_facts_are_probed(lab, run_module):
    res = run_module("xdp_support", {"interfaces": ["va"]}, netns=lab)
    kern = res["kernel"]
    assert kern["bpf_syscall"]["supported"] == "yes"
    assert kern["vmlinux_btf"]["supported"] == "yes"
    # bpf_jit_enable exists only in the initial network namespace: the answer comes from a JIT probe here
    assert kern["jit_enabled"]["supported"] == "yes"
    assert kern["xdp_link"]["supported"] == "yes" and "private network namespace" in kern["xdp_link"]["reason"]
    assert kern["tcx"]["supported"] == "yes"
    assert kern["prog_types"]["xdp"]["supported"] == "yes"
    assert kern["prog_types"]["sched_cls"]["supported"] == "yes"
    assert kern["prog_types"]["ext"]["supported"] == "no"  # MACHINE.md: ext is not available here
    assert res["xdp_features_available"] is True
    # the probes ran in a throw-away namespace: nothing is attached to the lab's loopback
    assert ip_xdp(lab, "lo") == (0, 0)


def test_driver_info_and_queues_are_reported(lab, run_module):
    res = run_module("xdp_support", {"interfaces": ["va", "tun0"]}, netns=lab)
    va = res["interfaces"]["va"]
    assert va["driver_version"]  # veth reports "1.0"
    assert va["queues"]["rx"] >= 1 and va["channels"]["max_rx"] >= 1
    assert va["attached"] is None
    assert res["interfaces"]["tun0"]["bus_info"] == "tun"
    assert va["max_native_mtu"] == 3506


def test_attached_program_is_reported_with_mode_and_name(lab, run_module):
    lab.run(["ip", "link", "set", "dev", "va", "xdpgeneric", "obj", paths.bpf_object("xdp_count"), "sec", "xdp"])
    _mode, prog_id = ip_xdp(lab, "va")
    res = run_module("xdp_support", {"interfaces": ["va"]}, netns=lab)
    assert res["interfaces"]["va"]["attached"] == {"mode": "generic", "prog_id": prog_id, "name": "xdp_count"}


def test_nonexistent_interface_fails_naming_it(lab, run_module):
    res = run_module("xdp_support", {"interfaces": ["va", "nope0"]}, netns=lab)
    assert res.failed
    assert "'nope0'" in res["msg"] and "not found" in res["msg"]
    assert "va" in res["msg"]  # names the interfaces that do exist


def test_require_native_fails_on_bridge_naming_it(lab, run_module):
    res = run_module("xdp_support", {"interfaces": ["va", "br0"], "require": "native"}, netns=lab)
    assert res.failed
    assert "br0" in res["msg"] and "native" in res["msg"]
    assert "va:" not in res["msg"]
    assert res["requirement_failures"] == [m for m in res["requirement_failures"] if m.startswith("br0:")]
    # the facts come back with the failure
    assert res["interfaces"]["br0"]["native"]["supported"] == "no"


@pytest.mark.parametrize("require", ["any", "generic"])
def test_require_generic_or_any_passes_on_bridge(lab, run_module, require):
    res = run_module("xdp_support", {"interfaces": ["br0", "mv0"], "require": require}, netns=lab)
    assert not res.failed, res.get("msg")


def test_require_native_passes_on_veth(lab, run_module):
    res = run_module("xdp_support", {"interfaces": ["va", "vb"], "require": "native"}, netns=lab)
    assert not res.failed, res.get("msg")


def test_probe_confirms_veth_and_refuses_bridge_leaving_nothing_attached(lab, run_module):
    res = run_module("xdp_support", {"interfaces": ["va", "br0", "tun0"], "probe": True}, netns=lab)
    ifs = res["interfaces"]
    assert ifs["va"]["probe"]["status"] == "confirmed" and ifs["va"]["native"]["supported"] == "yes"
    assert ifs["br0"]["probe"]["status"] == "refused" and ifs["br0"]["native"]["supported"] == "no"
    assert "native" in ifs["br0"]["probe"]["reason"]
    assert ifs["tun0"]["probe"]["status"] == "refused"
    for name in ("va", "br0", "tun0"):
        assert ip_xdp(lab, name) == (0, 0), name
    assert res["changed"] is False


def test_probe_restores_the_program_attached_before(lab, run_module):
    lab.run(["ip", "link", "set", "dev", "va", "xdpgeneric", "obj", paths.bpf_object("xdp_count"), "sec", "xdp"])
    before = ip_xdp(lab, "va")
    assert before[0] == 2  # XDP_ATTACHED_SKB
    res = run_module("xdp_support", {"interfaces": ["va"], "probe": True}, netns=lab)
    assert res["interfaces"]["va"]["probe"]["status"] == "confirmed", res["interfaces"]["va"]["probe"]
    assert ip_xdp(lab, "va") == before, "same program, same mode after the probe"
    assert res["interfaces"]["va"]["attached"]["prog_id"] == before[1]


def test_probe_with_a_native_program_attached_changes_nothing(lab, run_module):
    lab.run(["ip", "link", "set", "dev", "va", "xdpdrv", "obj", paths.bpf_object("xdp_count"), "sec", "xdp"])
    before = ip_xdp(lab, "va")
    res = run_module("xdp_support", {"interfaces": ["va"], "probe": True}, netns=lab)
    assert res["interfaces"]["va"]["probe"]["status"] == "confirmed"
    assert "nothing was changed" in res["interfaces"]["va"]["probe"]["reason"]
    assert ip_xdp(lab, "va") == before


def test_probe_is_skipped_in_check_mode(lab, run_module):
    res = run_module("xdp_support", {"interfaces": ["va", "br0"], "probe": True}, netns=lab, check_mode=True)
    assert not res.failed
    for name in ("va", "br0"):
        assert res["interfaces"][name]["probe"] == {"status": "skipped", "reason": "check mode"}
    assert res["interfaces"]["va"]["native"]["supported"] == "yes"


def test_tap_is_native_while_tun_is_not(lab, run_module):
    lab.ip("tuntap", "add", "dev", "tap0", "mode", "tap")
    res = run_module("xdp_support", {"interfaces": ["tap0", "tun0"]}, netns=lab)
    assert res["interfaces"]["tap0"]["bus_info"] == "tap"
    assert res["interfaces"]["tap0"]["native"]["supported"] == "yes"
    assert res["interfaces"]["tun0"]["native"]["supported"] == "no"


def test_veth_becomes_a_redirect_target_once_its_peer_has_a_program(lab, run_module):
    before = run_module("xdp_support", {"interfaces": ["va"]}, netns=lab)["interfaces"]["va"]
    assert "ndo_xmit" not in before["xdp_features"]
    assert any("REDIRECT target" in quirk for quirk in before["quirks"])
    lab.run(["ip", "link", "set", "dev", "vb", "xdpdrv", "obj", paths.bpf_object("xdp_count"), "sec", "xdp"])
    after = run_module("xdp_support", {"interfaces": ["va"]}, netns=lab)["interfaces"]["va"]
    assert "ndo_xmit" in after["xdp_features"]
