"""tc_program on the real kernel: TC egress on a veth in a namespace, UDP counted at the receiver."""

import json
import os
from types import SimpleNamespace

import pytest
from harness import paths
from harness.bpfbuild import compile_fixture
from harness.runner import module_env
from harness.traffic import UdpFlow, udp_count

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf

pytestmark = pytest.mark.kernel

PORT = 9999


def obj(name):
    return paths.bpf_object(name)


def tc_v2_object():
    """tc_drop_udp built with VERSION=2: other code (another tag), same maps, still drops."""
    return compile_fixture("tc_drop_udp", VERSION=2)


@pytest.fixture
def lab(netns, pin_root, state_dir):
    """tx (198.51.100.1, interface va: where egress programs go) -- veth -- rx (198.51.100.2)."""
    tx, rx = netns("tx"), netns("rx")
    tx.veth("va", "vb", peer_ns=rx, addr_a="198.51.100.1/24", addr_b="198.51.100.2/24")

    base = dict(interfaces=["va"], direction="egress", pin_root=pin_root, state_dir=state_dir)
    return SimpleNamespace(tx=tx, rx=rx, pin_root=pin_root, state_dir=state_dir, args=lambda **kw: dict(base, **kw))


TCX_QUERY = (
    "import json, socket, sys\n"
    "from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf\n"
    "print(json.dumps(libbpf.prog_query(socket.if_nametoindex(sys.argv[1]), libbpf.ATTACH_TCX_EGRESS)))\n"
)


def tcx_egress_ids(ns, ifname="va"):
    """Program ids on the TCX egress hook, from BPF_PROG_QUERY in the namespace (bpftool 7.1 predates TCX)."""
    out = ns.run([paths.PYTHON, "-c", TCX_QUERY, ifname], env=module_env()).stdout
    return json.loads(out)


def tc_filters(ns, ifname="va", direction="egress"):
    """(pref, name) of every filter on the clsact direction, as tc shows them."""
    out = ns.run(["tc", "-j", "filter", "show", "dev", ifname, direction], check=False).stdout or "[]"
    return [(f.get("pref"), f.get("options", {}).get("bpf_name")) for f in json.loads(out) if "options" in f]


def qdiscs(ns, ifname="va"):
    return [q["kind"] for q in json.loads(ns.run(["tc", "-j", "qdisc", "show", "dev", ifname]).stdout)]


def counter(pin, slot=0):
    """Per-CPU fleet_counter packets at one slot, summed over CPUs."""
    fd = libbpf.obj_get(pin)
    with libbpf.fd_closing(fd):
        cpus = libbpf.num_possible_cpus()
        value = libbpf.map_lookup(fd, slot.to_bytes(4, "little"), 16 * cpus)
    return sum(int.from_bytes(value[i * 16 : i * 16 + 8], "little") for i in range(cpus))


def test_tcx_egress_drops_udp_is_idempotent_and_replaces_atomically(lab, run_module):
    args = lab.args(name="eguard", object=obj("tc_drop_udp"), attach="tcx")
    res = run_module("tc_program", args, netns=lab.tx)
    assert res.changed and not res.failed, res
    assert res["attachments"]["va"]["method"] == "link"
    first_id = res["attachments"]["va"]["chain"][0]["prog_id"]
    assert tcx_egress_ids(lab.tx) == [first_id]
    assert qdiscs(lab.tx).count("clsact") == 0  # TCX needs no qdisc
    sent, received = udp_count(lab.tx, lab.rx, "198.51.100.2", PORT)
    assert sent > 0 and received == 0
    again = run_module("tc_program", args, netns=lab.tx)
    assert not again.failed and not again.changed, again
    assert tcx_egress_ids(lab.tx) == [first_id]
    # replace under traffic: every datagram is dropped by the old or the new program
    flow = UdpFlow(lab.tx, lab.rx, "198.51.100.2", PORT, duration=60)
    try:
        for version in (tc_v2_object(), obj("tc_drop_udp"), tc_v2_object()):
            res = run_module("tc_program", dict(args, object=version), netns=lab.tx)
            assert res.changed and not res.failed, res
            assert res["applied"]["tc_egress@va"]["action"] == "update"
    finally:
        sent, received = flow.stop()
    assert sent > 100 and received == 0
    new_id = res["attachments"]["va"]["chain"][0]["prog_id"]
    assert new_id != first_id and tcx_egress_ids(lab.tx) == [new_id]
    assert res["maps"]["reused"] == ["tc_drops"]
    assert counter(os.path.join(lab.pin_root, "eguard", "maps", "tc_drops")) >= sent
    res = run_module("tc_program", dict(name="eguard", state="absent", pin_root=lab.pin_root, state_dir=lab.state_dir), netns=lab.tx)
    assert res.changed and not res.failed, res
    assert tcx_egress_ids(lab.tx) == []


def test_clsact_egress_drops_udp_and_absent_keeps_foreign_filter_and_qdisc(lab, run_module):
    # another tool's clsact qdisc and filter on the same direction, after ours (a lower pref runs first)
    lab.tx.run(["tc", "qdisc", "add", "dev", "va", "clsact"])
    lab.tx.run(["tc", "filter", "add", "dev", "va", "egress", "pref", "65000", "bpf", "da", "obj", obj("tc_count"), "sec", "tc"])
    foreign = tc_filters(lab.tx)
    assert len(foreign) == 1
    args = lab.args(name="eguard", object=obj("tc_drop_udp"), attach="clsact")
    res = run_module("tc_program", args, netns=lab.tx)
    assert res.changed and not res.failed, res
    assert res["attachments"]["va"]["method"] == "clsact"
    assert res["applied"]["tc_egress@va"]["qdisc_created"] is False
    assert len(tc_filters(lab.tx)) == 2
    sent, received = udp_count(lab.tx, lab.rx, "198.51.100.2", PORT)
    assert sent > 0 and received == 0
    assert not run_module("tc_program", args, netns=lab.tx).changed
    res = run_module("tc_program", dict(args, object=tc_v2_object()), netns=lab.tx)
    assert res.changed and res["applied"]["tc_egress@va"]["action"] == "update", res
    assert len(tc_filters(lab.tx)) == 2  # replaced in place, not added
    res = run_module("tc_program", lab.args(name="eguard", state="absent"), netns=lab.tx)
    assert res.changed and not res.failed, res
    assert tc_filters(lab.tx) == foreign
    assert "clsact" in qdiscs(lab.tx)
    sent, received = udp_count(lab.tx, lab.rx, "198.51.100.2", PORT)
    assert received > 0


def test_clsact_qdisc_created_by_the_module_is_removed_with_it(lab, run_module):
    args = lab.args(name="eguard", object=obj("tc_drop_udp"), attach="clsact")
    res = run_module("tc_program", args, netns=lab.tx)
    assert res.changed and res["applied"]["tc_egress@va"]["qdisc_created"] is True, res
    assert "clsact" in qdiscs(lab.tx)
    assert run_module("tc_program", lab.args(name="eguard", state="absent"), netns=lab.tx).changed
    assert "clsact" not in qdiscs(lab.tx)


def test_two_tc_programs_in_order_then_first_removed(lab, run_module):
    assert run_module("tc_program", lab.args(name="eguard", object=obj("tc_drop_udp"), priority=20), netns=lab.tx).changed
    res = run_module("tc_program", lab.args(name="ecount", object=obj("tc_count"), priority=10), netns=lab.tx, diff=True)
    assert res.changed and not res.failed, res
    chain = res["attachments"]["va"]["chain"]
    assert [e["deployment"] for e in chain] == ["ecount", "eguard"]
    assert res["diff"]["after"]["tc_egress@va"][0].startswith("1. tc_count (deployment ecount, priority 10)")
    ids = tcx_egress_ids(lab.tx)
    assert ids == [chain[0]["prog_id"]]  # one program on the hook, the rest by tail call
    sent, received = udp_count(lab.tx, lab.rx, "198.51.100.2", PORT)
    assert sent > 0 and received == 0  # the second still drops behind the first
    assert counter(os.path.join(lab.pin_root, "ecount", "maps", "tc_hits"), slot=0) >= sent
    res = run_module("tc_program", lab.args(name="ecount", state="absent"), netns=lab.tx)
    assert res.changed and not res.failed, res
    assert [e["deployment"] for e in res["attachments"]["va"]["chain"]] == ["eguard"]
    sent, received = udp_count(lab.tx, lab.rx, "198.51.100.2", PORT)
    assert sent > 0 and received == 0
    assert tcx_egress_ids(lab.tx) == [res["attachments"]["va"]["chain"][0]["prog_id"]]


def test_tc_check_mode_changes_nothing(lab, run_module):
    before = lab.tx.run(["bpftool", "-j", "net"]).stdout
    res = run_module("tc_program", lab.args(name="eguard", object=obj("tc_drop_udp")), netns=lab.tx, check_mode=True, diff=True)
    assert res.changed and not res.failed, res
    assert lab.tx.run(["bpftool", "-j", "net"]).stdout == before
    assert not os.path.exists(os.path.join(lab.pin_root, "eguard"))
    assert res["diff"]["before"]["tc_egress@va"] == []
