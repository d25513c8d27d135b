"""Every declaration this collection makes for its three programs converges: the second run of bpf_map
changes nothing and counts nothing as added, changed or removed, all-zero values included (the filter's
default verdict pass, the load balancer's backend id 0 in its ring, the egress program's class 0 and config)."""

import os

import pytest
from harness import paths

from ansible_collections.ebpf.fleet.plugins.filter.maglev_entries import maglev_entries
from ansible_collections.ebpf.fleet.plugins.filter.xdp_filter_port_entries import xdp_filter_port_entries
from ansible_collections.ebpf.fleet.plugins.filter.xdp_filter_v4_entries import xdp_filter_v4_entries
from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import tc_egress_tables
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import read_entries

pytestmark = pytest.mark.kernel


@pytest.fixture
def deploy(pin_root):
    """deploy(object name, deployment name): the object loaded, its maps pinned at <pin_root>/<name>/maps/."""
    objects = []

    def load(obj_name, name):
        obj = libbpf.BpfObject.open(paths.bpf_object(obj_name))
        objects.append(obj)
        obj.load()
        for item in obj.maps():
            if not item.internal:
                bpffs.pin(item.fd, bpffs.map_pin(pin_root, name, item.name))
        return obj

    try:
        yield load
    finally:
        for obj in objects:
            obj.close()


def twice(run_module, pin_root, name, map_name, **args):
    """Apply one declaration twice; the second run must change and count nothing."""
    args = dict(args, name=name, map=map_name, pin_root=pin_root)
    first = run_module("bpf_map", args)
    assert not first.failed, (map_name, first.get("msg"))
    second = run_module("bpf_map", args, diff=True)
    assert not second.failed, (map_name, second.get("msg"))
    counts = second["counts"]
    assert not second.changed, (map_name, second["changes"])
    assert (counts["added"], counts["changed"], counts["removed"]) == (0, 0, 0), (map_name, counts)
    assert second["applied"] == 0 and second["diff"] == {"before": "", "after": ""}
    return first, second


def contents(pin_root, name, map_name):
    fd = libbpf.obj_get(bpffs.map_pin(pin_root, name, map_name))
    try:
        return {e["key"]: e["value"] for e in read_entries(fd)}
    finally:
        os.close(fd)


def test_filter_declarations_of_deploy_xdp_with_default_verdict_pass_converge(pin_root, deploy, run_module):
    deploy("xdp_filter", "filter")
    # the tasks of playbooks/deploy_xdp.yml with their documented defaults (and a few rules)
    tasks = [
        ("filter_mgmt_v4", dict(mode="sync", entries=[], value=1)),
        ("filter_mgmt_v6", dict(mode="sync", entries=[], value=1)),
        ("filter_mgmt_ports", dict(mode="sync", entries=[22], value=1)),
        (
            "filter_v4",
            dict(
                mode="sync",
                entries=xdp_filter_v4_entries(
                    [{"cidr": "198.51.100.0/24", "action": "drop", "rule_id": 0}, {"cidr": "198.51.100.7", "action": "pass", "rule_id": 3}]
                ),
            ),
        ),
        (
            "filter_ports",
            dict(
                mode="sync",
                entries=xdp_filter_port_entries(
                    [{"proto": "tcp", "port": 0, "action": "pass", "rule_id": 0}, {"proto": "udp", "port": 53, "action": "drop", "rule_id": 2}]
                ),
            ),
        ),
        ("filter_config", dict(mode="sync", entries=[{"key": 0, "value": {"default_verdict": "pass"}}])),
    ]
    for map_name, args in tasks:
        _first, second = twice(run_module, pin_root, "filter", map_name, **args)
        assert second["counts"]["unchanged"] == second["counts"]["desired"], (map_name, second["counts"])
    assert contents(pin_root, "filter", "filter_config")[0]["default_verdict"] == "pass"


def test_load_balancer_declarations_with_backend_id_0_converge(pin_root, deploy, run_module):
    deploy("xdp_lb", "lb")
    tables = maglev_entries(
        [
            {
                "vip": "192.0.2.10",
                "port": 80,
                "proto": "tcp",
                "mode": "dsr",
                "backends": [
                    {"address": "198.51.100.1", "mac": "02:00:00:00:00:01", "weight": 1},
                    {"address": "198.51.100.2", "mac": "02:00:00:00:00:02", "weight": 1},
                ],
            },
            {"vip": "2001:db8::10", "port": 53, "proto": "udp", "mode": "ipip", "backends": [{"address": "2001:db8::1", "weight": 1}]},
        ],
        ring_size=1021,
    )
    assert 0 in tables["backend_ids"].values()
    ring = tables["maps"]["lb_ring"]
    assert any(e["value"] == 0 for e in ring)  # backend id 0: an all-zero value in the array
    for map_name in ("lb_config", "lb_backends", "lb_ring", "lb_vips_v4", "lb_vips_v6"):
        first, second = twice(run_module, pin_root, "lb", map_name, mode="sync", entries=tables["maps"][map_name])
        declared = len(tables["maps"][map_name])
        assert first["counts"]["desired"] == second["counts"]["desired"] == declared
        assert second["counts"]["unchanged"] == declared, (map_name, second["counts"])
    # the first run counted only the non-zero ring slots as added: zero ones already held their value
    stored = contents(pin_root, "lb", "lb_ring")
    assert all(stored[e["key"]] == e["value"] for e in ring)


def test_egress_class_0_config_and_marks_converge(pin_root, deploy, run_module):
    deploy("tc_egress", "egress")
    classes = [
        {"key": 0, "value": tc_egress_tables.class_value({"action": "pass"})},
        {"key": 1, "value": tc_egress_tables.class_value({"action": "pass", "set_dscp": 1, "dscp": 46})},
        {"key": 4, "value": tc_egress_tables.class_value({"action": "pass", "limit": "drop", "rate_bps": 1000, "burst_bytes": 150})},
    ]
    direct, wide = tc_egress_tables.mark_entries({0x10: 0, 0x20: 1, 0x20000: 0})
    first, _second = twice(run_module, pin_root, "egress", "egress_classes", mode="sync", entries=classes)
    assert first["counts"]["added"] == 2  # class 0 is all zero: it already holds its value
    twice(run_module, pin_root, "egress", "egress_config", mode="sync", entries=[{"key": 0, "value": {"default_class": 0}}])
    twice(run_module, pin_root, "egress", "egress_mark_classes", mode="sync", entries=direct)
    twice(run_module, pin_root, "egress", "egress_marks", mode="sync", entries=wide)  # a hash with a zero value
    assert contents(pin_root, "egress", "egress_marks") == {0x20000: {"class_id": 0}}


def test_array_sync_compares_every_declared_index_including_all_zero(pin_root, deploy, run_module):
    deploy("xdp_filter", "filter")
    args = {"name": "filter", "map": "filter_config", "pin_root": pin_root, "mode": "sync"}
    res = run_module("bpf_map", dict(args, entries={0: {"default_verdict": "drop"}}))
    assert res.changed and res["counts"]["added"] == 1
    # declaring the all-zero value over a non-zero element writes it, counted as changed
    res = run_module("bpf_map", dict(args, entries={0: {"default_verdict": "pass"}}), diff=True)
    assert res.changed and res["counts"]["changed"] == 1 and res["applied"] == 1
    assert "default_verdict" in res["diff"]["after"] and "pass" in res["diff"]["after"]
    assert contents(pin_root, "filter", "filter_config")[0]["default_verdict"] == "pass"
    res = run_module("bpf_map", dict(args, entries={0: {"default_verdict": "pass"}}))
    assert not res.changed and res["counts"]["unchanged"] == 1


@pytest.mark.parametrize("verdict", ["max", "FLEET_VERDICT_MAX", 3])
def test_the_verdict_enums_end_marker_is_refused_and_nothing_is_written(pin_root, deploy, run_module, verdict):
    deploy("xdp_filter", "filter")
    args = {"name": "filter", "map": "filter_config", "pin_root": pin_root}
    assert not run_module("bpf_map", dict(args, entries={0: {"default_verdict": "drop"}})).failed
    res = run_module("bpf_map", dict(args, entries={0: {"default_verdict": verdict}}))
    assert res.failed and res["applied"] == 0 and "nothing was written" in res["msg"]
    assert "is the end marker of enum fleet_verdict (FLEET_VERDICT_MAX = 3), not a value: expected one of pass, drop, redirect" in res["msg"]
    assert contents(pin_root, "filter", "filter_config")[0]["default_verdict"] == "drop"
