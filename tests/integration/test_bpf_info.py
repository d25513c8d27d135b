"""bpf_info on the real kernel: the collection's deployments and other tools' programs, per interface."""

from types import SimpleNamespace

import pytest
from harness import paths
from harness.traffic import udp_count

pytestmark = pytest.mark.kernel

PORT = 9999


def obj(name):
    return paths.bpf_object(name)


@pytest.fixture
def lab(netns, pin_root, state_dir):
    """tx (203.0.113.1, va) -- veth -- rx (203.0.113.2, vb); rx also holds a veth pair fa/fb for a foreign program."""
    tx, rx = netns("tx"), netns("rx")
    tx.veth("va", "vb", peer_ns=rx, addr_a="203.0.113.1/24", addr_b="203.0.113.2/24")
    rx.veth("fa", "fb")

    return SimpleNamespace(tx=tx, rx=rx, pin_root=pin_root, state_dir=state_dir, base=dict(pin_root=pin_root, state_dir=state_dir))


def packets(value):
    """Packets of a summed fleet_counter: typed ({packets, bytes}) or, without the typed codec, hex."""
    if isinstance(value, dict):
        return value["packets"]
    return int.from_bytes(bytes.fromhex(value[2:])[:8], "little")


def test_finds_deployment_and_foreign_program_and_sums_counters(lab, run_module):
    res = run_module("xdp_program", dict(lab.base, name="guard", object=obj("xdp_drop_udp"), interfaces=["vb"], priority=10), netns=lab.rx)
    assert res.changed and not res.failed, res
    guard_id = res["attachments"]["vb"]["chain"][0]["prog_id"]
    res = run_module(
        "tc_program", dict(lab.base, name="tcguard", object=obj("tc_drop_udp"), interfaces=["vb"], direction="ingress", attach="clsact"), netns=lab.rx
    )
    assert res.changed and not res.failed, res
    tc_id = res["attachments"]["vb"]["chain"][0]["prog_id"]
    lab.rx.run(["ip", "link", "set", "dev", "fa", "xdpgeneric", "obj", obj("xdp_plain_pass"), "sec", "xdp"])
    sent, received = udp_count(lab.tx, lab.rx, "203.0.113.2", PORT)
    assert sent > 0 and received == 0

    info = run_module("bpf_info", dict(lab.base, contents=True), netns=lab.rx, check_mode=True)
    assert not info.failed and not info.changed, info
    vb = info["interfaces"]["vb"]
    assert vb["xdp"]["mode"] == "native"
    [mine] = vb["xdp"]["programs"]
    assert (mine["id"], mine["managed"], mine["deployment"], mine["via"]) == (guard_id, True, "guard", "xdp_link")
    [tc] = vb["tc_ingress"]
    assert (tc["id"], tc["managed"], tc["deployment"], tc["via"]) == (tc_id, True, "tcguard", "clsact")
    [foreign] = info["interfaces"]["fa"]["xdp"]["programs"]
    assert foreign["managed"] is False and foreign["deployment"] is None
    assert foreign["name"] == "xdp_plain_pass" and foreign["mode"] == "generic" and foreign["via"] == "netlink"

    guard = info["deployments"]["guard"]
    assert guard["recorded"] and guard["hook"] == "xdp" and guard["version"] == 1
    assert guard["interfaces"] == ["vb"] and guard["programs"]["xdp@vb"]["id"] == guard_id
    drops = guard["maps"]["drops"]
    assert drops["type"] == "percpu_array" and drops["max_entries"] == 2
    # the counters, summed over CPUs: every datagram sent was dropped and counted once
    total = sum(packets(e["value"]) for e in drops["entries"])
    assert total >= sent
    assert set(info["deployments"]) == {"guard", "tcguard"}


def test_query_reduces_the_result(lab, run_module):
    assert run_module("xdp_program", dict(lab.base, name="guard", object=obj("xdp_drop_udp"), interfaces=["vb"]), netns=lab.rx).changed
    assert run_module("xdp_program", dict(lab.base, name="count", object=obj("xdp_count"), interfaces=["vb"], priority=5), netns=lab.rx).changed
    lab.rx.run(["ip", "link", "set", "dev", "fa", "xdpgeneric", "obj", obj("xdp_plain_pass"), "sec", "xdp"])
    res = run_module("bpf_info", dict(lab.base, query="values(interfaces)[].xdp.programs[] | [?!managed].name"), netns=lab.rx)
    assert not res.failed, res
    assert res["query_result"] == ["xdp_plain_pass"]
    assert "interfaces" not in res and "deployments" not in res
    res = run_module("bpf_info", dict(lab.base, interfaces=["vb"], query="interfaces.vb.xdp.programs[].[position, deployment, via]"), netns=lab.rx)
    assert res["query_result"] == [[1, "count", "xdp_link"], [2, "guard", "tail_call"]], res
    # TC programs on a TCX link, found through BPF_PROG_QUERY
    assert run_module(
        "tc_program", dict(lab.base, name="eguard", object=obj("tc_drop_udp"), interfaces=["vb"], direction="egress", attach="tcx"), netns=lab.rx
    ).changed
    res = run_module("bpf_info", dict(lab.base, interfaces=["vb"], query="interfaces.vb.tc_egress[].[via, deployment, managed]"), netns=lab.rx)
    assert res["query_result"] == [["tcx", "eguard", True]], res


def test_bad_query_and_unknown_interface_fail_clearly(lab, run_module):
    res = run_module("bpf_info", dict(lab.base, query="interfaces[?"), netns=lab.rx)
    assert res.failed and "query=" in res["msg"] and "JMESPath" in res["msg"]
    # valid, but a function meets null where it wants an object (a deployment this host does not run)
    res = run_module("bpf_info", dict(lab.base, query="values(deployments.nosuch.counters)"), netns=lab.rx)
    assert res.failed and "bug" not in res["msg"], res["msg"]
    expected = "query='values(deployments.nosuch.counters)' cannot be evaluated on this host's data: In function values(), invalid type for value: None"
    assert res["msg"].startswith(expected), res["msg"]
    res = run_module("bpf_info", dict(lab.base, interfaces=["nope0"]), netns=lab.rx)
    assert res.failed and "nope0" in res["msg"] and "vb" in res["msg"]


def test_maps_read_back_in_the_operators_notation_and_only_counters_are_summed(lab, run_module):
    """lb_stats is keyed by enum fleet_lb_stat, which the kernel refuses as an array's key type (libbpf then
    creates the map without BTF): its entries are typed through the deployment's recorded object. A
    connection-table entry (per-CPU, not a counter) is not added up over CPUs."""
    import os
    import struct

    from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf

    res = run_module("xdp_program", dict(lab.base, name="lb", object=obj("xdp_lb"), interfaces=["vb"]), netns=lab.rx)
    assert res.changed and not res.failed, res.get("msg")
    cpus = libbpf.num_possible_cpus()
    fd = libbpf.obj_get(bpffs.map_pin(lab.pin_root, "lb", "lb_stats"))
    try:
        assert libbpf.map_info(fd)["btf_key_type_id"] == 0  # what the kernel holds: no types
        libbpf.map_update(fd, struct.pack("<I", 3), b"".join(struct.pack("<QQ", cpu + 1, 100) for cpu in range(cpus)))
    finally:
        os.close(fd)
    fd = libbpf.obj_get(bpffs.map_pin(lab.pin_root, "lb", "lb_conntrack_v4"))
    try:
        key_size = libbpf.map_info(fd)["key_size"]
        # one shared value per flow (LRU_HASH with per-CPU LRU lists): read back as written, never summed
        libbpf.map_update(fd, bytes(key_size), struct.pack("<IIQ", 5, 0, 77))
    finally:
        os.close(fd)
    info = run_module("bpf_info", dict(lab.base, contents=True, query="deployments.lb.maps"), netns=lab.rx)
    assert not info.failed, info.get("msg")
    maps = info["query_result"]
    stats = {e["key"]: e["value"] for e in maps["lb_stats"]["entries"]}
    assert maps["lb_stats"]["notation"] == "typed"
    assert stats["ct_hit"] == {"packets": cpus * (cpus + 1) // 2, "bytes": 100 * cpus}
    assert len(stats) == 11 and {"pass_non_vip", "syn", "tx"} <= set(stats) and "max" not in stats
    [entry] = maps["lb_conntrack_v4"]["entries"]
    assert entry["value"]["backend"] == 5 and entry["value"]["pad"] == 0


def test_check_records_reports_in_sync_then_what_drifted_and_counters_per_verdict(lab, run_module):
    """check_records compares the kernel with the records (module_utils/host/drift.py): a declared entry changed or
    deleted by hand, a deployment's pins without a record, the chain's link taken away; counters: per verdict."""
    import os
    import shutil

    from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
    from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import MapCodec

    def module(module_name, **args):
        res = run_module(module_name, dict(lab.base, **args), netns=lab.rx)
        assert not res.failed, res.get("msg")
        return res

    module("xdp_program", name="filter", object=obj("xdp_filter"), interfaces=["vb"], priority=10)
    module("xdp_program", name="count", object=obj("xdp_count"), interfaces=["vb"], priority=5)
    module("bpf_map", name="filter", map="filter_config", mode="sync", entries=[{"key": 0, "value": {"default_verdict": "drop"}}])
    module("bpf_map", name="filter", map="filter_mgmt_v4", mode="merge", entries=["192.0.2.0/28", "192.0.2.64/28"], value=1)
    sent, received = udp_count(lab.tx, lab.rx, "203.0.113.2", PORT)
    assert sent > 0 and received == 0  # default-deny

    def drift():
        res = module("bpf_info", check_records=True, counters=True)
        return {name: dep["drift"] for name, dep in res["deployments"].items()}, res["deployments"]

    found, deps = drift()
    assert {name: d["state"] for name, d in found.items()} == {"filter": "in_sync", "count": "in_sync"}, found
    [hook] = found["filter"]["hooks"]
    assert (hook["hook"], hook["interface"], hook["in_sync"], hook["position"], hook["mode"], hook["reason"]) == ("xdp", "vb", True, 2, "native", None)
    assert hook["prog_id"] == hook["recorded_prog_id"] == deps["filter"]["programs"]["xdp@vb"]["id"]
    maps = [(m["map"], m["in_sync"]) for m in found["filter"]["maps"]]
    assert maps == [("filter_config", True), ("filter_mgmt_v4", True)]
    stats = deps["filter"]["counters"]["filter_stats"]
    assert stats["verdicts"]["drop"] >= sent and stats["counters"]["default_drop"]["packets"] >= sent
    assert "counters" not in module("bpf_info")["deployments"]["filter"]  # only on request

    # by hand: filter_config's element changed; a declared management prefix deleted, an undeclared one added
    # (filter_mgmt_v4 was declared by merges: what else it holds is not drift)
    for map_name in ("filter_config", "filter_mgmt_v4"):
        fd = libbpf.obj_get(bpffs.map_pin(lab.pin_root, "filter", map_name))
        with libbpf.fd_closing(fd):
            codec = MapCodec.for_fd(fd)
            if map_name == "filter_config":
                value = codec.decode_value(libbpf.map_lookup(fd, codec.encode_key(0), codec.value_buf_size))
                libbpf.map_update(fd, codec.encode_key(0), codec.encode_value(dict(value, default_verdict="pass")))
            else:
                assert libbpf.map_delete(fd, codec.encode_key("192.0.2.64/28"))
                libbpf.map_update(fd, codec.encode_key("198.51.100.0/24"), codec.encode_value(1))
    found, _deps = drift()
    assert found["count"]["state"] == "in_sync" and found["filter"]["state"] == "drifted"
    assert found["filter"]["reasons"] == ["map filter_config: 1 changed by hand (0)", "map filter_mgmt_v4: 1 missing by hand (192.0.2.64/28)"]
    mgmt = found["filter"]["maps"][1]
    assert (mgmt["missing"], mgmt["changed"], mgmt["extra"], mgmt["keys"]) == (1, 0, 0, ["192.0.2.64/28"])
    # a sync declaration holds exactly its entries: the same map declared with sync, then an entry added by hand
    module("bpf_map", name="filter", map="filter_mgmt_v4", mode="sync", entries=["192.0.2.0/28"], value=1)
    fd = libbpf.obj_get(bpffs.map_pin(lab.pin_root, "filter", "filter_mgmt_v4"))
    with libbpf.fd_closing(fd):
        codec = MapCodec.for_fd(fd)
        libbpf.map_update(fd, codec.encode_key("203.0.113.0/24"), codec.encode_value(1))
    mgmt = module("bpf_info", check_records=True, query="deployments.filter.drift.maps[1]")["query_result"]
    assert (mgmt["in_sync"], mgmt["extra"], mgmt["keys"]) == (False, 1, ["203.0.113.0/24"])
    assert mgmt["reason"] == "map filter_mgmt_v4: 1 not declared by hand (203.0.113.0/24)"

    # pins whose record was lost, and the hook's link taken away behind the records' back
    shutil.rmtree(os.path.join(lab.state_dir, "count"))
    bpffs.unpin(os.path.join(bpffs.hook_dir(lab.pin_root, "xdp", "vb"), "link"))
    found, _deps = drift()
    assert found["count"]["state"] == "drifted" and "has no record" in found["count"]["reasons"][0]
    assert found["filter"]["hooks"][0]["in_sync"] is False
    assert found["filter"]["hooks"][0]["reason"] == ("nothing of the recorded chain is attached to xdp@vb: detached behind the collection's back")
