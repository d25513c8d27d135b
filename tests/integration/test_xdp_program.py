"""xdp_program on the real kernel: veth pairs in namespaces, traffic counted at a UDP receiver."""

import json
import os
from types import SimpleNamespace

import pytest
from harness import paths
from harness.bpfbuild import compile_fixture
from harness.traffic import UdpFlow, udp_count

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf

pytestmark = pytest.mark.kernel

PORT = 9999


def obj(name):
    return paths.bpf_object(name)


def v2_object():
    """The same drop program built with VERSION=2: other code, same maps."""
    return compile_fixture("xdp_drop_udp", VERSION=2)


@pytest.fixture
def lab(netns, pin_root, state_dir):
    """tx (192.0.2.1) -- veth -- rx (192.0.2.2, interface vb: where programs go)."""
    tx, rx = netns("tx"), netns("rx")
    tx.veth("va", "vb", peer_ns=rx, addr_a="192.0.2.1/24", addr_b="192.0.2.2/24")

    base = dict(interfaces=["vb"], pin_root=pin_root, state_dir=state_dir)
    return SimpleNamespace(tx=tx, rx=rx, pin_root=pin_root, state_dir=state_dir, args=lambda **kw: dict(base, **kw))


def xdp_prog_id(ns, ifname="vb"):
    link = json.loads(ns.ip("-j", "-d", "link", "show", ifname).stdout)[0]
    return link.get("xdp", {}).get("prog", {}).get("id", 0)


def bpftool_view(ns, pin_root=None):
    """What bpftool shows of this namespace: its attachments (`bpftool net`), the links of those programs
    (other sessions' links elsewhere on the machine are left out) and, with pin_root, the pins there."""
    net = json.loads(ns.run(["bpftool", "-j", "net"]).stdout)
    attached = {
        prog.get("id")
        for entry in net
        for progs in entry.values()
        if isinstance(progs, list)
        for dev in progs
        for prog in (dev.get("multi_attachments") or [dev])
    }
    links = [link for link in json.loads(ns.run(["bpftool", "-j", "link"]).stdout) if link.get("prog_id") in attached]
    pins = sorted(os.path.join(top, name) for top, _dirs, files in os.walk(pin_root) for name in files) if pin_root else []
    return net, links, pins


def test_attach_drops_udp_and_rerun_is_idempotent(lab, run_module):
    args = lab.args(name="guard", object=obj("xdp_drop_udp"), priority=10)
    res = run_module("xdp_program", args, netns=lab.rx)
    assert res.changed and not res.failed, res
    first_id = xdp_prog_id(lab.rx)
    assert first_id == res["attachments"]["vb"]["chain"][0]["prog_id"]
    sent, received = udp_count(lab.tx, lab.rx, "192.0.2.2", PORT)
    assert sent > 0 and received == 0
    again = run_module("xdp_program", args, netns=lab.rx)
    assert not again.failed and not again.changed, again
    assert xdp_prog_id(lab.rx) == first_id
    record = json.load(open(os.path.join(lab.state_dir, "guard", "deployment.json")))
    assert record["interfaces"] == ["vb"] and len(record["object_sha256"]) == 64
    pin = os.path.join(lab.pin_root, "guard", "maps", "drops")
    assert oct(os.stat(pin).st_mode & 0o777) == "0o600"


def test_fifty_replaces_under_traffic_let_no_packet_through(lab, run_module):
    objects = [obj("xdp_drop_udp"), v2_object()]
    res = run_module("xdp_program", lab.args(name="guard", object=objects[0]), netns=lab.rx)
    assert res.changed, res
    ids = {xdp_prog_id(lab.rx)}
    flow = UdpFlow(lab.tx, lab.rx, "192.0.2.2", PORT, duration=600)
    try:
        for i in range(1, 51):
            res = run_module("xdp_program", lab.args(name="guard", object=objects[i % 2]), netns=lab.rx)
            assert res.changed and not res.failed, res
            ids.add(xdp_prog_id(lab.rx))
    finally:
        sent, received = flow.stop()
    assert len(ids) == 51  # 50 real replaces, each a new program
    assert sent > 1000 and received == 0


def test_map_state_survives_an_upgrade(lab, run_module):
    res = run_module("xdp_program", lab.args(name="guard", object=obj("xdp_drop_udp")), netns=lab.rx)
    assert res.changed, res
    sent, _received = udp_count(lab.tx, lab.rx, "192.0.2.2", PORT, duration=0.3)
    pin = os.path.join(lab.pin_root, "guard", "maps", "drops")

    def drops():
        fd = libbpf.obj_get(pin)
        with libbpf.fd_closing(fd):
            cpus = libbpf.num_possible_cpus()
            _keys, values, n = libbpf.map_lookup_batch(fd, 4, 16 * cpus, 2)
            return sum(int.from_bytes(values[i * 16 : i * 16 + 8], "little") for i in range(n * cpus))

    before = drops()
    assert before >= sent > 0
    res = run_module("xdp_program", lab.args(name="guard", object=v2_object()), netns=lab.rx)
    assert res.changed and res["maps"]["reused"] == ["drops"], res
    assert drops() >= before


def test_incompatible_map_fails_unless_replacement_allowed(lab, run_module):
    assert run_module("xdp_program", lab.args(name="guard", object=obj("xdp_drop_udp")), netns=lab.rx).changed
    first_id = xdp_prog_id(lab.rx)
    res = run_module("xdp_program", lab.args(name="guard", object=obj("xdp_drop_udp_bigmap")), netns=lab.rx)
    assert res.failed and "drops" in res["msg"] and "max_entries" in res["msg"]
    assert xdp_prog_id(lab.rx) == first_id
    args = lab.args(name="guard", object=obj("xdp_drop_udp_bigmap"), replace_incompatible_maps=True)
    res = run_module("xdp_program", args, netns=lab.rx)
    assert res.changed and not res.failed, res
    fd = libbpf.obj_get(os.path.join(lab.pin_root, "guard", "maps", "drops"))
    with libbpf.fd_closing(fd):
        assert libbpf.map_info(fd)["max_entries"] == 16


def test_two_programs_in_order_then_first_removed(lab, run_module):
    assert run_module("xdp_program", lab.args(name="guard", object=obj("xdp_drop_udp"), priority=20), netns=lab.rx).changed
    res = run_module("xdp_program", lab.args(name="count", object=obj("xdp_count"), priority=10), netns=lab.rx, diff=True)
    assert res.changed, res
    chain = res["attachments"]["vb"]["chain"]
    assert [e["deployment"] for e in chain] == ["count", "guard"]
    assert xdp_prog_id(lab.rx) == chain[0]["prog_id"]
    sent, received = udp_count(lab.tx, lab.rx, "192.0.2.2", PORT, duration=0.3)
    assert sent > 0 and received == 0  # the second program still drops behind the first
    res = run_module("xdp_program", lab.args(name="count", state="absent"), netns=lab.rx)
    assert res.changed, res
    assert not os.path.exists(os.path.join(lab.pin_root, "count"))
    sent, received = udp_count(lab.tx, lab.rx, "192.0.2.2", PORT, duration=0.3)
    assert sent > 0 and received == 0
    assert xdp_prog_id(lab.rx) == res["attachments"]["vb"]["chain"][0]["prog_id"]


def test_absent_removes_only_this_collections_objects(lab, run_module):
    other = os.path.join(lab.pin_root, "unrelated_pin")
    lab.rx.run(["bpftool", "prog", "load", obj("xdp_plain_pass"), other])
    assert run_module("xdp_program", lab.args(name="guard", object=obj("xdp_drop_udp")), netns=lab.rx).changed
    res = run_module("xdp_program", lab.args(name="guard", state="absent"), netns=lab.rx)
    assert res.changed and not res.failed, res
    assert xdp_prog_id(lab.rx) == 0
    assert os.path.exists(other)
    assert not os.path.exists(os.path.join(lab.state_dir, "guard"))
    assert not run_module("xdp_program", lab.args(name="guard", state="absent"), netns=lab.rx).changed


def test_verifier_failure_keeps_previous_program_and_reports_log(lab, run_module):
    assert run_module("xdp_program", lab.args(name="guard", object=obj("xdp_drop_udp")), netns=lab.rx).changed
    first_id = xdp_prog_id(lab.rx)
    res = run_module("xdp_program", lab.args(name="guard", object=obj("xdp_verifier_fail")), netns=lab.rx)
    assert res.failed and not res.changed
    assert "invalid access to packet" in res["verifier_log"] and " +12)" in res["verifier_log"]  # the failing instruction
    assert xdp_prog_id(lab.rx) == first_id
    sent, received = udp_count(lab.tx, lab.rx, "192.0.2.2", PORT, duration=0.3)
    assert sent > 0 and received == 0


def test_check_mode_changes_nothing_and_diff_shows_order(lab, run_module):
    assert run_module("xdp_program", lab.args(name="guard", object=obj("xdp_drop_udp"), priority=20), netns=lab.rx).changed
    before = bpftool_view(lab.rx, lab.pin_root)
    assert before[1], "the link of the attached program is in the view"
    res = run_module("xdp_program", lab.args(name="count", object=obj("xdp_count"), priority=10), netns=lab.rx, check_mode=True, diff=True)
    assert res.changed and not res.failed, res
    assert bpftool_view(lab.rx, lab.pin_root) == before
    assert not os.path.exists(os.path.join(lab.pin_root, "count"))
    after = res["diff"]["after"]["xdp@vb"]
    assert after[0].startswith("1. xdp_count (deployment count, priority 10)")
    assert after[1].startswith("2. xdp_drop_udp (deployment guard, priority 20)")


def test_generic_mode_on_bridge_and_auto_fallback(netns, pin_root, state_dir, run_module):
    ns = netns("br")
    ns.veth("p0", "p1")
    ns.bridge("br0", ports=["p0"])
    base = dict(interfaces=["br0"], pin_root=pin_root, state_dir=state_dir, object=obj("xdp_drop_udp"))
    res = run_module("xdp_program", dict(base, name="strict", mode="auto"), netns=ns)
    assert res.failed and "native XDP" in res["msg"] and "allow_generic_fallback" in res["msg"], res
    assert xdp_prog_id(ns, "br0") == 0
    res = run_module("xdp_program", dict(base, name="loose", mode="auto", allow_generic_fallback=True), netns=ns)
    assert res.changed and not res.failed, res
    assert res["attachments"]["br0"]["mode"] == "generic"
    assert res["applied"]["xdp@br0"]["fallback"] is True
    assert not run_module("xdp_program", dict(base, name="loose", mode="auto", allow_generic_fallback=True), netns=ns).changed
    assert run_module("xdp_program", dict(base, name="loose", state="absent"), netns=ns).changed
    res = run_module("xdp_program", dict(base, name="gen", mode="generic"), netns=ns)
    assert res.changed and not res.failed, res
    link = json.loads(ns.ip("-j", "-d", "link", "show", "br0").stdout)[0]
    assert link["xdp"]["mode"] == 2  # generic
