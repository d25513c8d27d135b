"""bpf_map at scale: a million entries from a file and back, a kill in the middle of a sync, and the
atomic switch of a rule set held in a one-slot array of maps."""

import json
import os
import signal
import socket
import subprocess
import time

import pytest
from harness import paths
from harness.runner import module_env

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import MapCodec, read_entries, read_raw

pytestmark = pytest.mark.kernel

DEPLOY = "big"
MILLION = 1000000


@pytest.fixture
def loaded(pin_root):
    obj = libbpf.BpfObject.open(paths.bpf_object("map_types"))
    try:
        obj.load()
        for name in ("prefixes_v4", "deny_v4", "rules_v4"):
            path = bpffs.map_pin(pin_root, DEPLOY, name)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            libbpf.obj_pin(obj.map(name).fd, path)
        yield obj
    finally:
        obj.close()


def cidr_file(path, count, offset=0):
    with open(path, "w") as handle:
        handle.write("".join("%d.%d.%d.0/24\n" % (10 + ((i + offset) >> 16), ((i + offset) >> 8) & 255, (i + offset) & 255) for i in range(count)))
    return str(path)


def count_of(fd, codec=None):
    codec = codec or MapCodec.for_fd(fd)
    return read_raw(fd, codec)[2]


def test_a_million_cidrs_sync_from_empty_and_rerun_is_a_no_op(pin_root, loaded, run_module, tmp_path):
    path = cidr_file(tmp_path / "m.txt", MILLION)
    args = {"name": DEPLOY, "map": "prefixes_v4", "pin_root": pin_root, "entries_file": path, "value": "drop", "mode": "sync"}
    res = run_module("bpf_map", args)
    assert not res.failed, res.get("msg")
    assert res.changed and res["counts"]["added"] == MILLION and res["applied"] == MILLION
    assert len(res["changes"]["added"]) == 100
    fd = loaded.map("prefixes_v4").fd
    assert count_of(fd) == MILLION
    key = (32).to_bytes(4, "little") + socket.inet_aton("10.15.66.77")  # inside entry 0x0f42 -> 10.15.66.0/24
    assert libbpf.map_lookup(fd, key, 4) == (1).to_bytes(4, "little")
    again = run_module("bpf_map", args)
    assert not again.failed and not again.changed and again["applied"] == 0
    assert again["counts"]["unchanged"] == MILLION
    # one line different: exactly one add and one removal
    path2 = cidr_file(tmp_path / "m2.txt", MILLION, offset=1)
    res = run_module("bpf_map", dict(args, entries_file=path2), diff=True)
    assert res["counts"]["added"] == 1 and res["counts"]["removed"] == 1
    assert res["changes"]["removed"] == [{"key": "10.0.0.0/24", "value": "drop"}]


def test_a_kill_in_the_middle_of_a_sync_is_repaired_by_a_rerun(pin_root, loaded, run_module, tmp_path):
    path = cidr_file(tmp_path / "m.txt", MILLION)
    args = {"name": DEPLOY, "map": "prefixes_v4", "pin_root": pin_root, "entries_file": path, "value": "drop", "mode": "sync"}
    args_path = tmp_path / "args.json"
    args_path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.Popen(
        [paths.PYTHON, "-m", "ansible_collections.ebpf.fleet.plugins.modules.bpf_map", str(args_path)],
        env=module_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fd = loaded.map("prefixes_v4").fd
    deadline = time.monotonic() + 60
    try:
        # wait for the first batch to land, then kill
        while time.monotonic() < deadline and proc.poll() is None:
            if next(libbpf.map_keys(fd, 8), None) is not None:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = count_of(fd)
    assert 0 < partial < MILLION, "the kill should land mid-apply (got %d entries)" % partial
    res = run_module("bpf_map", args)
    assert not res.failed and res.changed
    assert res["counts"]["added"] == MILLION - partial and res["counts"]["unchanged"] == partial
    assert count_of(fd) == MILLION
    assert not run_module("bpf_map", args).changed


def outer_slot(obj):
    return int.from_bytes(libbpf.map_lookup(obj.map("rules_v4").fd, b"\0\0\0\0", 4), "little")


def test_rule_set_in_an_array_of_maps_is_switched_whole(pin_root, loaded, run_module):
    first_inner = outer_slot(loaded)
    args = {"name": DEPLOY, "map": "rules_v4", "pin_root": pin_root, "mode": "sync", "entries": {"203.0.113.0/24": "drop", "192.0.2.0/24": "pass"}}
    res = run_module("bpf_map", args, diff=True)
    assert not res.failed, res.get("msg")
    assert res.changed and res["swapped"] and res["counts"]["added"] == 2
    new_inner = outer_slot(loaded)
    assert new_inner != first_inner and res["map"]["inner_map_id"] == new_inner
    inner_fd = libbpf.map_fd_by_id(new_inner)
    try:
        info = libbpf.map_info(inner_fd)
        assert info["type"] == "lpm_trie" and info["btf_key_type_id"] and info["max_entries"] == 1100000
        assert sorted((e["key"], e["value"]) for e in read_entries(inner_fd)) == [("192.0.2.0/24", "pass"), ("203.0.113.0/24", "drop")]
    finally:
        os.close(inner_fd)
    assert not run_module("bpf_map", args).changed
    assert outer_slot(loaded) == new_inner
    # merge keeps the set and adds; absent removes; each is a new inner map
    res = run_module("bpf_map", dict(args, mode="merge", entries={"198.51.100.0/24": "drop"}))
    assert res["swapped"] and res["counts"]["added"] == 1 and res["counts"]["removed"] == 0
    res = run_module("bpf_map", dict(args, mode="absent", entries=["203.0.113.0/24"]))
    assert res["swapped"] and res["counts"]["removed"] == 1
    inner_fd = libbpf.map_fd_by_id(outer_slot(loaded))
    try:
        assert sorted(e["key"] for e in read_entries(inner_fd)) == ["192.0.2.0/24", "198.51.100.0/24"]
    finally:
        os.close(inner_fd)


def test_rule_set_check_mode_and_bad_entry_keep_the_old_inner_map(pin_root, loaded, run_module):
    first_inner = outer_slot(loaded)
    args = {"name": DEPLOY, "map": "rules_v4", "pin_root": pin_root, "mode": "sync", "entries": {"203.0.113.0/24": "drop"}}
    res = run_module("bpf_map", args, check_mode=True)
    assert res.changed and not res["swapped"] and outer_slot(loaded) == first_inner
    res = run_module("bpf_map", dict(args, entries={"203.0.113.0/24": "drop", "203.0.113.1/24": "drop"}))
    assert res.failed and "host bits set" in res["msg"] and outer_slot(loaded) == first_inner


def test_program_reads_only_whole_rule_sets(pin_root, loaded, run_module):
    """The XDP program looks 0.0.0.0/32 up in the inner map of slot 0: drop only once the new set is in."""
    prog = loaded.program("map_types_prog").fd
    packet = b"\0" * 64
    assert libbpf.prog_test_run(prog, packet).retval == 2  # XDP_PASS: empty rule set
    args = {"name": DEPLOY, "map": "rules_v4", "pin_root": pin_root, "mode": "sync", "entries": {"0.0.0.0/0": "drop"}}
    assert run_module("bpf_map", args)["swapped"]
    assert libbpf.prog_test_run(prog, packet).retval == 1  # XDP_DROP: the new set is in place
