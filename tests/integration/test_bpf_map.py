"""ebpf.fleet.bpf_map on real maps: every map type, every notation, the modes, check and diff, bad input."""

import os
import socket

import pytest
from harness import paths

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import read_entries

pytestmark = pytest.mark.kernel

DEPLOY = "maps"


@pytest.fixture
def loaded(pin_root):
    """tests/bpf/map_types.o loaded, every map pinned at <pin_root>/maps/maps/<map>."""
    obj = libbpf.BpfObject.open(paths.bpf_object("map_types"))
    try:
        obj.load()
        for m in obj.maps():
            if not m.internal:
                pin(m.fd, bpffs.map_pin(pin_root, DEPLOY, m.name))
        yield obj
    finally:
        obj.close()


def pin(fd, path):
    bpffs.pin(fd, path)


def target(pin_root, map_name, **args):
    out = {"name": DEPLOY, "map": map_name, "pin_root": pin_root}
    out.update(args)
    return out


def entries_of(pin_root, map_name, per_cpu="sum"):
    fd = libbpf.obj_get(bpffs.map_pin(pin_root, DEPLOY, map_name))
    try:
        return read_entries(fd, per_cpu)
    finally:
        os.close(fd)


def as_dict(entries):
    return {_hashable(e["key"]): e["value"] for e in entries}


def _hashable(key):
    return tuple(sorted(key.items())) if isinstance(key, dict) else key


def ok(result):
    assert not result.failed, result.get("msg") or result["_stderr"]
    return result


def test_hash_with_struct_key_and_value_round_trips_through_module_and_read(pin_root, loaded, run_module):
    key = {"vip": "192.0.2.10", "port": 443, "proto": 6}
    value = {
        "addr6": "2001:db8::10",
        "mac": "02:00:00:00:00:01",
        "weight": 3,
        "delta": -2,
        "name": "web",
        "enabled": True,
        "verdict": "redirect",
        "flags": ["log", "count"],
        "mark": 7,
        "ports": [1, 2, 3],
        "tiny": -1,
    }
    res = ok(run_module("bpf_map", target(pin_root, "vips", entries=[{"key": key, "value": value}])))
    assert res.changed and res["counts"]["added"] == 1 and res["applied"] == 1
    expected_key = dict(key, pad=0)
    expected_value = dict(value, pad=[0, 0, 0])
    assert res["changes"]["added"] == [{"key": expected_key, "value": expected_value}]
    assert entries_of(pin_root, "vips") == [{"key": expected_key, "value": expected_value}]
    again = ok(run_module("bpf_map", target(pin_root, "vips", entries=[{"key": key, "value": value}])))
    assert not again.changed and again["applied"] == 0


def test_lpm_trie_cidr_keys_merge_sync_absent(pin_root, loaded, run_module):
    args = target(pin_root, "prefixes_v4", entries={"203.0.113.0/24": "drop", "192.0.2.0/24": "pass"})
    ok(run_module("bpf_map", args))
    assert as_dict(entries_of(pin_root, "prefixes_v4")) == {"203.0.113.0/24": "drop", "192.0.2.0/24": "pass"}
    # merge leaves others and changes one
    merge = {"192.0.2.0/24": "drop", "198.51.100.7": "drop"}
    res = ok(run_module("bpf_map", target(pin_root, "prefixes_v4", entries=merge)))
    assert res["counts"] == {"added": 1, "changed": 1, "removed": 0, "unchanged": 1, "desired": 2, "before": 2}
    assert as_dict(entries_of(pin_root, "prefixes_v4")) == {"203.0.113.0/24": "drop", "192.0.2.0/24": "drop", "198.51.100.7/32": "drop"}
    # sync removes the rest
    res = ok(run_module("bpf_map", target(pin_root, "prefixes_v4", mode="sync", entries={"203.0.113.0/24": "drop"})))
    assert res["counts"]["removed"] == 2
    assert as_dict(entries_of(pin_root, "prefixes_v4")) == {"203.0.113.0/24": "drop"}
    # absent takes bare keys
    res = ok(run_module("bpf_map", target(pin_root, "prefixes_v4", mode="absent", entries=["203.0.113.0/24", "203.0.113.128/25"])))
    assert res.changed and res["counts"]["removed"] == 1
    assert entries_of(pin_root, "prefixes_v4") == []
    assert not run_module("bpf_map", target(pin_root, "prefixes_v4", mode="absent", entries=["203.0.113.0/24"])).changed


def test_lpm_trie_lookup_in_the_kernel_matches_the_written_prefix(pin_root, loaded, run_module):
    ok(run_module("bpf_map", target(pin_root, "prefixes_v6", entries={"2001:db8::/32": ["log", "tcp"]})))
    fd = libbpf.obj_get(bpffs.map_pin(pin_root, DEPLOY, "prefixes_v6"))
    try:
        key = (128).to_bytes(4, "little") + socket.inet_pton(socket.AF_INET6, "2001:db8:1::5")
        assert libbpf.map_lookup(fd, key, 4) == (1 | 4).to_bytes(4, "little")
    finally:
        os.close(fd)


def test_lru_hash_and_plain_hash(pin_root, loaded, run_module):
    ok(run_module("bpf_map", target(pin_root, "flows", entries={"2001:db8::1": 10, "::1": 2**63})))
    assert as_dict(entries_of(pin_root, "flows")) == {"2001:db8::1": 10, "::1": 2**63}
    ok(run_module("bpf_map", target(pin_root, "deny_v4", entries=["192.0.2.1", "192.0.2.2"], value="drop")))
    assert as_dict(entries_of(pin_root, "deny_v4")) == {"192.0.2.1": "drop", "192.0.2.2": "drop"}


def test_arrays_have_no_delete_so_absent_means_zero(pin_root, loaded, run_module):
    res = ok(run_module("bpf_map", target(pin_root, "policy", entries={"1": "drop", "3": "redirect"})))
    assert res["counts"]["added"] == 2
    values = as_dict(entries_of(pin_root, "policy"))
    assert len(values) == 8 and values[1] == "drop" and values[3] == "redirect" and values[0] == "pass"
    res = ok(run_module("bpf_map", target(pin_root, "policy", mode="sync", entries={"3": "redirect"})))
    assert res["counts"]["removed"] == 1 and as_dict(entries_of(pin_root, "policy"))[1] == "pass"
    ok(run_module("bpf_map", target(pin_root, "macs", entries={"2": "02:aa:bb:cc:dd:ee"})))
    assert as_dict(entries_of(pin_root, "macs"))[2] == "02:aa:bb:cc:dd:ee"
    res = ok(run_module("bpf_map", target(pin_root, "policy", clear=True)))
    assert res.changed and set(as_dict(entries_of(pin_root, "policy")).values()) == {"pass"}


def test_per_cpu_array_and_hash_one_value_for_all_or_per_cpu(pin_root, loaded, run_module):
    cpus = libbpf.num_possible_cpus()
    ok(run_module("bpf_map", target(pin_root, "counters", entries={"0": {"packets": 2, "bytes": 100}})))
    assert as_dict(entries_of(pin_root, "counters"))[0] == {"packets": 2 * cpus, "bytes": 100 * cpus}
    assert as_dict(entries_of(pin_root, "counters", "list"))[0] == [{"packets": 2, "bytes": 100}] * cpus
    per_cpu = list(range(1, cpus + 1))
    res = ok(run_module("bpf_map", target(pin_root, "port_hits", entries={"443": {"per_cpu": per_cpu}}, per_cpu="list")))
    assert res["changes"]["added"] == [{"key": 443, "value": per_cpu}]
    assert entries_of(pin_root, "port_hits", "list") == [{"key": 443, "value": per_cpu}]
    assert entries_of(pin_root, "port_hits") == [{"key": 443, "value": sum(per_cpu)}]
    assert not run_module("bpf_map", target(pin_root, "port_hits", entries={"443": {"per_cpu": per_cpu}})).changed


def test_prog_array_by_pin_path_and_devmap_by_interface_name(pin_root, loaded, run_module, netns):
    prog_pin = os.path.join(pin_root, DEPLOY, "progs", "xdp@lo")
    pin(loaded.program("map_types_prog").fd, prog_pin)
    prog_id = libbpf.prog_info(loaded.program("map_types_prog").fd)["id"]
    res = ok(run_module("bpf_map", target(pin_root, "jump", entries={"1": prog_pin})))
    assert res.changed and entries_of(pin_root, "jump") == [{"key": 1, "value": prog_id}]
    assert not run_module("bpf_map", target(pin_root, "jump", entries={"1": prog_id})).changed
    ok(run_module("bpf_map", target(pin_root, "jump", mode="sync", entries={})))
    assert entries_of(pin_root, "jump") == []

    ns = netns("dm")
    ns.veth("dma", "dmb")
    res = ok(run_module("bpf_map", target(pin_root, "ports", entries={"0": "dma", "2": "dmb"}), netns=ns))
    assert res["changes"]["added"] == [{"key": 0, "value": "dma"}, {"key": 2, "value": "dmb"}]
    again = ok(run_module("bpf_map", target(pin_root, "ports", entries={"0": "dma", "2": "dmb"}), netns=ns))
    assert not again.changed
    assert len(entries_of(pin_root, "ports")) == 2


def test_check_mode_reports_the_plan_and_writes_nothing(pin_root, loaded, run_module):
    ok(run_module("bpf_map", target(pin_root, "deny_v4", entries={"192.0.2.1": "drop"})))
    res = ok(run_module("bpf_map", target(pin_root, "deny_v4", mode="sync", entries={"192.0.2.9": "drop"}), check_mode=True, diff=True))
    assert res.changed and res["applied"] == 0
    assert res["counts"]["added"] == 1 and res["counts"]["removed"] == 1
    assert res["diff"] == {"before": "192.0.2.1: drop\n", "after": "192.0.2.9: drop\n"}
    assert as_dict(entries_of(pin_root, "deny_v4")) == {"192.0.2.1": "drop"}


def test_diff_lists_changes_in_notation_and_caps_large_ones(pin_root, loaded, run_module):
    ok(run_module("bpf_map", target(pin_root, "deny_v4", entries={"192.0.2.1": "drop"})))
    res = ok(run_module("bpf_map", target(pin_root, "deny_v4", entries={"192.0.2.1": "pass"}), diff=True))
    assert res["changes"]["changed"] == [{"key": "192.0.2.1", "before": "drop", "after": "pass"}]
    assert res["diff"] == {"before": "192.0.2.1: drop\n", "after": "192.0.2.1: pass\n"}
    many = {"%s.%d" % (["198.51.100", "203.0.113"][i // 256], i % 256): "drop" for i in range(500)}
    res = ok(run_module("bpf_map", target(pin_root, "deny_v4", entries=many, diff_limit=10), diff=True))
    assert res["counts"]["added"] == 500 and len(res["changes"]["added"]) == 10
    assert res["diff"]["after"].endswith("... and 490 more\n")


def test_entries_file_plain_list_json_and_yaml(pin_root, loaded, run_module, tmp_path):
    lines = tmp_path / "deny.txt"
    lines.write_text("# block list\n203.0.113.0/24\n\n192.0.2.0/24  # docs\n")
    ok(run_module("bpf_map", target(pin_root, "prefixes_v4", entries_file=str(lines), value="drop", mode="sync")))
    assert as_dict(entries_of(pin_root, "prefixes_v4")) == {"203.0.113.0/24": "drop", "192.0.2.0/24": "drop"}
    js = tmp_path / "e.json"
    js.write_text('{"198.51.100.0/24": "pass"}')
    ok(run_module("bpf_map", target(pin_root, "prefixes_v4", entries_file=str(js), mode="sync")))
    assert as_dict(entries_of(pin_root, "prefixes_v4")) == {"198.51.100.0/24": "pass"}
    yml = tmp_path / "e.yml"
    yml.write_text("- key: 198.51.100.0/25\n  value: redirect\n- 198.51.100.128/25: drop\n")
    ok(run_module("bpf_map", target(pin_root, "prefixes_v4", entries_file=str(yml), mode="sync")))
    assert as_dict(entries_of(pin_root, "prefixes_v4")) == {"198.51.100.0/25": "redirect", "198.51.100.128/25": "drop"}


def test_by_path_and_raw_hex(pin_root, loaded, run_module):
    path = bpffs.map_pin(pin_root, DEPLOY, "deny_v4")
    ok(run_module("bpf_map", {"path": path, "entries": {"0xc0000201": "0x01000000"}}))
    assert entries_of(pin_root, "deny_v4") == [{"key": "192.0.2.1", "value": "drop"}]


def test_map_without_btf_takes_hex(pin_root, run_module):
    fd = libbpf.map_create("hash", "nobtf", 3, 2, 16)
    try:
        path = os.path.join(pin_root, "nobtf")
        pin(fd, path)
        ok(run_module("bpf_map", {"path": path, "entries": {"0xaabbcc": "0x0102"}}))
        assert read_entries(fd) == [{"key": "0xaabbcc", "value": "0x0102"}]
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "map_name, args, message",
    [
        (
            "vips",
            {"entries": [{"key": {"vip": "192.0.2.1"}, "value": {"wieght": 1}}]},
            "entries[0].value: unknown member 'wieght' of struct backend: valid members are addr6, mac, weight",
        ),
        (
            "vips",
            {"entries": [{"key": {"vip": "192.0.2.1"}, "value": {"weight": 1}}, {"key": {"vip": "192.0.2.2"}, "value": {"weight": 70000}}]},
            "entries[1].value.weight: 70000 is out of range for unsigned short (0..65535)",
        ),
        (
            "prefixes_v4",
            {"entries": {"203.0.113.0/24": "drop", "203.0.113.1/24": "drop"}},
            "'203.0.113.1/24' has host bits set: expected the network address, 203.0.113.0/24",
        ),
        ("prefixes_v4", {"entries": {"203.0.113.0/24": "drop", "203.0.113.0/40": "drop"}}, "prefix length '40' is not 0..32"),
        ("deny_v4", {"entries": {"0xc0000201ff": "drop"}}, "is 5 bytes; expected 4 bytes (8 hex digits)"),
        ("deny_v4", {"entries": {"192.0.2.1": "reject"}}, "expected one of pass, drop, redirect"),
    ],
)
def test_bad_input_fails_clearly_and_leaves_the_map_unchanged(pin_root, loaded, run_module, map_name, args, message):
    seed = {
        "vips": [{"key": {"vip": "198.51.100.1"}, "value": {"weight": 9}}],
        "prefixes_v4": {"198.51.100.0/24": "pass"},
        "deny_v4": {"198.51.100.1": "pass"},
    }[map_name]
    ok(run_module("bpf_map", target(pin_root, map_name, entries=seed)))
    before = entries_of(pin_root, map_name)
    res = run_module("bpf_map", target(pin_root, map_name, mode="sync", **args))
    assert res.failed and message in res["msg"] and "nothing was written" in res["msg"]
    assert res["applied"] == 0
    assert entries_of(pin_root, map_name) == before


def test_bad_line_of_a_file_names_the_line(pin_root, loaded, run_module, tmp_path):
    lines = tmp_path / "deny.txt"
    lines.write_text("203.0.113.0/24\n203.0.113.300/32\n")
    res = run_module("bpf_map", target(pin_root, "prefixes_v4", entries_file=str(lines), value="drop"))
    assert res.failed and "deny.txt line 2" in res["msg"] and "bad address '203.0.113.300'" in res["msg"]
    assert entries_of(pin_root, "prefixes_v4") == []


def test_missing_map_and_wrong_map_type_fail_clearly(pin_root, loaded, run_module):
    res = run_module("bpf_map", target(pin_root, "nope", entries={}))
    assert res.failed and "does not exist" in res["msg"] and "deny_v4" in res["msg"]
    res = run_module("bpf_map", {"name": "ghost", "map": "x", "pin_root": pin_root, "entries": {}})
    assert res.failed and "is the deployment loaded" in res["msg"]
    fd = libbpf.map_create("ringbuf", "rb", 0, 0, 4096)
    try:
        path = os.path.join(pin_root, "rb")
        pin(fd, path)
        res = run_module("bpf_map", {"path": path, "entries": {}})
        assert res.failed and "is a ringbuf map" in res["msg"] and "supported types" in res["msg"]
    finally:
        os.close(fd)
    prog_pin = os.path.join(pin_root, "aprog")
    pin(loaded.program("map_types_prog").fd, prog_pin)
    res = run_module("bpf_map", {"path": prog_pin, "entries": {}})
    assert res.failed and "is not a BPF map" in res["msg"]


# ---------------------------------------------------------------- bounds before the first write


@pytest.mark.parametrize(
    "args, message",
    [
        ({"entries": {"1": "drop", "2": "drop", "8": "redirect"}}, "entries['8']: index 8 is out of range: the array map has 8 elements (0..7)"),
        ({"entries": [{"key": 3, "value": "drop"}, {"key": 4096, "value": "drop"}]}, "entries[1].key: index 4096 is out"),
    ],
)
def test_array_entry_out_of_range_fails_before_any_write(pin_root, loaded, run_module, args, message):
    ok(run_module("bpf_map", target(pin_root, "policy", entries={"5": "drop"})))
    before = entries_of(pin_root, "policy")
    res = run_module("bpf_map", target(pin_root, "policy", **args))
    assert res.failed and message in res["msg"] and "nothing was written" in res["msg"], res.get("msg")
    assert res["applied"] == 0 and not res.changed
    assert entries_of(pin_root, "policy") == before


def test_array_key_out_of_range_in_a_file_names_the_line(pin_root, loaded, run_module, tmp_path):
    lines = tmp_path / "slots.txt"
    lines.write_text("1\n2\n\n9\n")
    res = run_module("bpf_map", target(pin_root, "policy", entries_file=str(lines), value="drop"))
    assert res.failed and "slots.txt line 4: index 9 is out of range" in res["msg"]
    assert set(as_dict(entries_of(pin_root, "policy")).values()) == {"pass"}


def test_more_entries_than_a_hash_holds_fails_before_any_write(pin_root, loaded, run_module):
    res = run_module("bpf_map", target(pin_root, "port_hits", entries={str(p): 1 for p in range(1, 66)}))
    assert res.failed and "holds at most 64 elements; these entries would leave 65" in res["msg"], res.get("msg")
    assert res["applied"] == 0 and entries_of(pin_root, "port_hits") == []


# ---------------------------------------------------------------- hostile input


def test_alias_bomb_and_huge_value_fail_fast_with_a_short_message(pin_root, loaded, run_module, tmp_path):
    bomb = tmp_path / "bomb.yml"
    bomb.write_text(
        "a: &a ['192.0.2.1', '192.0.2.1', '192.0.2.1', '192.0.2.1', '192.0.2.1', '192.0.2.1']\n"
        + "".join("%s: &%s [%s]\n" % (chr(98 + i), chr(98 + i), ", ".join(["*" + chr(97 + i)] * 9)) for i in range(12))
    )
    res = run_module("bpf_map", target(pin_root, "deny_v4", entries_file=str(bomb)))
    assert res.failed and "bomb.yml line" in res["msg"] and "aliases expand it" in res["msg"], res.get("msg")
    assert len(res["msg"]) < 500
    res = run_module("bpf_map", target(pin_root, "deny_v4", entries={"192.0.2.1": "d" * 2_000_000}))
    assert res.failed and "is not a value of enum fleet_verdict" in res["msg"] and len(res["msg"]) < 600
    assert entries_of(pin_root, "deny_v4") == []


# ---------------------------------------------------------------- check mode before the first deploy


def test_check_mode_without_the_map_or_a_record_predicts_every_declared_entry_and_writes_nothing(pin_root, run_module, tmp_path):
    state = str(tmp_path / "never")  # neither the pins nor the records exist
    args = {
        "name": "filter",
        "map": "filter_v4",
        "pin_root": os.path.join(pin_root, "fresh"),
        "mode": "sync",
        "entries": {"198.51.100.%d/32" % i: "drop" for i in range(5)},
        "diff_limit": 3,
        "state_dir": state,
    }
    res = ok(run_module("bpf_map", args, check_mode=True, diff=True))
    assert res.changed and res["predicted_from"] == "declaration" and res["applied"] == 0
    assert res["counts"] == {"added": 5, "changed": 0, "removed": 0, "unchanged": 0, "desired": 5, "before": 0}
    assert res["changes"]["added"][0] == {"key": "198.51.100.0/32", "value": "drop"} and len(res["changes"]["added"]) == 3
    assert res["diff"]["after"] == "198.51.100.0/32: drop\n198.51.100.1/32: drop\n198.51.100.2/32: drop\n... and 2 more\n"
    assert not os.path.exists(os.path.join(pin_root, "fresh")) and not os.path.exists(state)
    # outside check mode a missing map still fails
    res = run_module("bpf_map", args)
    assert res.failed and "does not exist" in res["msg"]


def test_check_mode_after_a_reboot_types_the_entries_through_the_recorded_object(pin_root, run_module, state_dir):
    folder = os.path.join(state_dir, "maps")
    os.makedirs(folder)
    with open(paths.bpf_object("map_types"), "rb") as src, open(os.path.join(folder, "object.o"), "wb") as dst:
        dst.write(src.read())
    base = {"name": "maps", "pin_root": pin_root, "state_dir": state_dir}
    res = ok(run_module("bpf_map", dict(base, map="policy", mode="sync", entries={"0": "pass", "1": "drop"}), check_mode=True, diff=True))
    assert res["predicted_from"] == "record" and res["map"]["type"] == "array" and res["map"]["max_entries"] == 8
    # typed: index 0 declared pass is all zero, what a new array already holds
    assert res["counts"]["added"] == 1 and res["changes"]["added"] == [{"key": 1, "value": "drop"}]
    assert res["diff"]["after"] == "1: drop\n"
    res = run_module("bpf_map", dict(base, map="policy", entries={"9": "drop"}), check_mode=True)
    assert res.failed and "index 9 is out of range" in res["msg"]
    res = run_module("bpf_map", dict(base, map="policy", entries={"1": "reject"}), check_mode=True)
    assert res.failed and "'reject' is not a value of enum fleet_verdict" in res["msg"]
    res = ok(run_module("bpf_map", dict(base, map="prefixes_v4", entries={"203.0.113.0/24": "drop"}), check_mode=True))
    assert res["predicted_from"] == "record" and res["changes"]["added"] == [{"key": "203.0.113.0/24", "value": "drop"}]
    assert os.listdir(pin_root) == []


def test_maps_checks_every_map_before_writing_any_and_names_the_item_that_fails(pin_root, loaded, run_module):
    both = {
        "name": DEPLOY,
        "pin_root": pin_root,
        "mode": "sync",
        "value": "drop",
        "maps": [{"map": "deny_v4", "entries": ["192.0.2.1"]}, {"map": "prefixes_v4", "entries": {"203.0.113.0/24": "pass"}}],
    }
    # a later map's bad entry (host bits set), a missing pin, and two entry sources: nothing is written
    bad_entry = dict(both, maps=[both["maps"][0], {"map": "prefixes_v4", "entries": ["203.0.113.1/24"]}])
    missing = dict(both, maps=[both["maps"][0], {"map": "nope", "entries": []}])
    two_sources = dict(both, maps=[both["maps"][0], {"map": "prefixes_v4", "entries": [], "entries_file": "/x"}])
    for args, message in (
        (bad_entry, "maps[1] (prefixes_v4): invalid entry, nothing was written"),
        (missing, "maps[1] (nope): map pin"),
        (two_sources, "maps[1] (prefixes_v4): entries and entries_file are mutually exclusive"),
    ):
        res = run_module("bpf_map", args)
        assert res.failed and message in res["msg"], res.get("msg")
        assert entries_of(pin_root, "deny_v4") == [] and entries_of(pin_root, "prefixes_v4") == []
    res = run_module("bpf_map", {"name": DEPLOY, "pin_root": pin_root, "entries": []})
    assert res.failed and "name=maps needs map (one map) or maps (several)" in res["msg"], res.get("msg")

    # check mode predicts both; the real run writes both, with the item's value over the task's
    check = ok(run_module("bpf_map", both, check_mode=True))
    assert check.changed and [item["counts"]["added"] for item in check["maps"]] == [1, 1]
    assert entries_of(pin_root, "deny_v4") == []
    res = ok(run_module("bpf_map", both))
    assert res.changed and res["applied"] == 2 and [item["changed"] for item in res["maps"]] == [True, True]
    assert as_dict(entries_of(pin_root, "deny_v4")) == {"192.0.2.1": "drop"}
    assert as_dict(entries_of(pin_root, "prefixes_v4")) == {"203.0.113.0/24": "pass"}
    assert not ok(run_module("bpf_map", both)).changed
