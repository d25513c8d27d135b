"""Restore at boot and textfile metrics (ebpf-fleet-host, extras/host): deploy with the modules, wipe what a
reboot wipes (pins, attachments, pin folders; the records in state_dir stay), run what the systemd units run,
and check programs, chain order, modes, map contents, real traffic verdicts and the metrics file.

The command runs as the units run it: extras/host/ebpf-fleet-host under the system Python, which has no
Ansible (the host needs none), inside the lab namespace with nsenter --net (only the network namespace
changes, as at boot on a real host).
"""

import json
import os
import shutil
import subprocess

import pytest
from harness import host_units, paths
from harness.traffic import udp_count

from ansible_collections.ebpf.fleet.plugins.filter.xdp_filter_port_entries import xdp_filter_port_entries
from ansible_collections.ebpf.fleet.plugins.filter.xdp_filter_v4_entries import xdp_filter_v4_entries
from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import tc_egress_tables
from ansible_collections.ebpf.fleet.plugins.module_utils.host import records
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_records, map_sync
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import read_entries

pytestmark = pytest.mark.kernel

HOST = os.path.join(paths.REPO, "extras", "host")
UNITS = os.path.join(HOST, "systemd")
DROPPED_PORT, OPEN_PORT = 5001, 5002
DECLARED = ("filter_config", "filter_ports", "filter_v4", "filter_mgmt_v4")


def exec_start(unit: str) -> list:
    """The unit's ExecStart as an argument list, with the installed command replaced by the repository's."""
    argv = host_units.exec_start(os.path.join(UNITS, unit))
    assert argv[0] == "/usr/local/sbin/ebpf-fleet-host"
    return [os.path.join(HOST, "ebpf-fleet-host")] + argv[1:]


def run_unit(unit: str, netns, state_dir: str, textfile: str = "") -> subprocess.CompletedProcess:
    env = {"EBPF_FLEET_LIB": paths.COLLECTIONS, "EBPF_FLEET_PYTHON": host_units.system_python(), "EBPF_FLEET_STATE_DIR": state_dir}
    if textfile:
        env["EBPF_FLEET_TEXTFILE_DIR"] = textfile
    return host_units.run_in_netns(exec_start(unit), netns, env)


def ok(result):
    assert not result.failed, result.get("msg") or result["_stderr"]
    return result


@pytest.fixture
def host(netns, pin_root, state_dir, run_module):
    """A client and a server namespace over a veth; on the server's side the filter (priority 10) behind a
    counting program (priority 5) in one XDP chain, native mode, with its maps declared through bpf_map; and
    the egress TC program on the same interface, dropping the UDP the server sends to OPEN_PORT."""
    client, server = netns("rc"), netns("rs")
    client.veth("va", "vb", peer_ns=server, addr_a="198.51.100.1/24", addr_b="198.51.100.2/24")
    common = {"pin_root": pin_root, "state_dir": state_dir, "interfaces": ["vb"], "mode": "native"}
    ok(run_module("xdp_program", dict(common, name="filter", object=paths.bpf_object("xdp_filter"), priority=10), netns=server))
    ok(run_module("xdp_program", dict(common, name="counter", object=paths.bpf_object("xdp_count"), priority=5), netns=server))

    def declare(map_name, **args):
        return ok(run_module("bpf_map", dict(args, name="filter", map=map_name, pin_root=pin_root, state_dir=state_dir), netns=server))

    declare("filter_config", mode="sync", entries=[{"key": 0, "value": {"default_verdict": "pass"}}])
    declare("filter_ports", mode="sync", entries=xdp_filter_port_entries([{"proto": "udp", "port": DROPPED_PORT, "action": "drop", "rule_id": 11}]))
    declare("filter_v4", mode="sync", entries=xdp_filter_v4_entries([{"cidr": "203.0.113.0/24", "action": "drop", "rule_id": 1}]))
    # merged twice, one key removed again: the record follows every mode
    declare("filter_mgmt_v4", mode="merge", entries=["192.0.2.0/28", "192.0.2.64/28"], value=1)
    declare("filter_mgmt_v4", mode="merge", entries=["198.51.100.0/28"], value=1)
    declare("filter_mgmt_v4", mode="absent", entries=["192.0.2.64/28"])
    # the egress program on the server's side: UDP it sends to OPEN_PORT falls in class 3, which drops
    ok(
        run_module(
            "tc_program",
            {
                "name": "egress",
                "object": paths.bpf_object("tc_egress"),
                "direction": "egress",
                "interfaces": ["vb"],
                "pin_root": pin_root,
                "state_dir": state_dir,
            },
            netns=server,
        )
    )
    for map_name, entries in (
        ("egress_classes", [{"key": 3, "value": tc_egress_tables.class_value({"action": "drop"})}]),
        ("egress_ports", [{"key": OPEN_PORT, "value": {"udp": 3, "set": ["udp"]}}]),
        ("egress_config", [{"key": 0, "value": {"default_class": 0}}]),
    ):
        ok(
            run_module(
                "bpf_map", {"name": "egress", "map": map_name, "mode": "sync", "entries": entries, "pin_root": pin_root, "state_dir": state_dir}, netns=server
            )
        )
    return {"client": client, "server": server, "pin_root": pin_root, "state_dir": state_dir}


def contents(pin_root, name, map_name):
    """A map's entries; for a one-slot map of maps (filter_ports) its inner map's."""
    fd = libbpf.obj_get(bpffs.map_pin(pin_root, name, map_name))
    try:
        info = libbpf.map_info(fd)
        if info["type"] in map_sync.OUTER_MAPS:
            inner = map_sync.inner_map_fd(fd, info)
            os.close(fd)
            fd = inner
        return sorted(json.dumps(e, sort_keys=True) for e in read_entries(fd))
    finally:
        os.close(fd)


def xdp_of(netns, ifname="vb") -> dict:
    return json.loads(netns.ip("-j", "-d", "link", "show", ifname).stdout)[0].get("xdp") or {}


def chain_of(state_dir, hook_id="xdp@vb") -> list:
    rec = records.read_hook(state_dir, hook_id)
    return [(e["deployment"], e["prog_id"]) for e in rec["entries"]]


def verdicts(lab) -> tuple:
    """Datagrams received of half-second flows: (client to server on the dropped port, on the open port,
    server to client: through the egress program)."""
    dropped = udp_count(lab["client"], lab["server"], "198.51.100.2", DROPPED_PORT)
    passed = udp_count(lab["client"], lab["server"], "198.51.100.2", OPEN_PORT)
    egress = udp_count(lab["server"], lab["client"], "198.51.100.1", OPEN_PORT)
    assert dropped[0] > 0 and passed[0] > 0 and egress[0] > 0
    return dropped[1], passed[1], egress[1]


def wipe_as_a_reboot_does(lab):
    """Pins and pin folders gone (the links with them: the programs leave the interface); records stay."""
    for entry in os.listdir(lab["pin_root"]):
        shutil.rmtree(os.path.join(lab["pin_root"], entry))
    if xdp_of(lab["server"]):
        lab["server"].ip("link", "set", "dev", "vb", "xdp", "off")
    assert not xdp_of(lab["server"])


def test_bpf_map_records_the_declared_contents_but_never_counters(host, run_module):
    state_dir, pin_root = host["state_dir"], host["pin_root"]
    assert map_records.listed(state_dir, "filter") == sorted(DECLARED)
    assert map_records.listed(state_dir, "counter") == []  # nothing declared: nothing recorded
    mgmt = map_records.read(state_dir, "filter", "filter_mgmt_v4")
    assert len(mgmt.entries) == 2 and not mgmt.exact  # merges only: restore adds, never removes
    assert map_records.read(state_dir, "filter", "filter_ports").exact
    assert not os.path.exists(map_records.path_of(state_dir, "filter", "filter_stats"))

    record = map_records.path_of(state_dir, "filter", "filter_mgmt_v4")
    saved = open(record, "rb").read()
    args = {"name": "filter", "map": "filter_mgmt_v4", "pin_root": pin_root, "state_dir": state_dir}
    # check mode predicts and records nothing; a refused entry records nothing
    check = run_module("bpf_map", dict(args, mode="sync", entries=["203.0.113.0/24"], value=1), netns=host["server"], check_mode=True)
    assert check.changed and check["recorded"] is None
    bad = run_module("bpf_map", dict(args, mode="merge", entries=["203.0.113.0/33"], value=1), netns=host["server"])
    assert bad.failed and open(record, "rb").read() == saved
    # a map named by its pin path is recorded under its deployment too
    by_path = run_module(
        "bpf_map",
        {
            "path": bpffs.map_pin(pin_root, "filter", "filter_mgmt_v4"),
            "mode": "merge",
            "entries": ["203.0.113.0/24"],
            "value": 1,
            "pin_root": pin_root,
            "state_dir": state_dir,
        },
        netns=host["server"],
    )
    assert by_path.changed and by_path["recorded"] == record
    assert len(map_records.read(state_dir, "filter", "filter_mgmt_v4").entries) == 3


def test_restore_after_a_simulated_reboot_brings_back_chain_maps_and_verdicts_and_a_second_run_changes_nothing(host, tmp_path):
    lab, state_dir = host, host["state_dir"]
    before = verdicts(lab)
    assert before[0] == 0 and before[1] > 0 and before[2] == 0
    declared = {m: contents(lab["pin_root"], "filter", m) for m in DECLARED}
    declared_egress = {m: contents(lab["pin_root"], "egress", m) for m in ("egress_classes", "egress_ports")}
    assert [d for d, _id in chain_of(state_dir)] == ["counter", "filter"]

    wipe_as_a_reboot_does(lab)
    assert all(received > 0 for received in verdicts(lab))  # nothing filters any more

    first = run_unit("ebpf-fleet-restore.service", lab["server"], state_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(first.stdout.splitlines())[0].startswith("counter: ")
    assert "filter: restored" in first.stdout, first.stdout
    # the chain in its recorded order, natively attached, the first program on the hook
    chain = chain_of(state_dir)
    assert [d for d, _id in chain] == ["counter", "filter"]
    xdp = xdp_of(lab["server"])
    assert xdp["mode"] == 1 and xdp["prog"]["id"] == chain[0][1]
    for map_name in DECLARED:
        assert contents(lab["pin_root"], "filter", map_name) == declared[map_name], map_name
    for map_name, entries in declared_egress.items():
        assert contents(lab["pin_root"], "egress", map_name) == entries, map_name
    received_dropped, received_open, received_egress = verdicts(lab)
    assert received_dropped == 0 and received_open > 0 and received_egress == 0

    second = run_unit("ebpf-fleet-restore.service", lab["server"], state_dir)
    assert second.returncode == 0, second.stdout + second.stderr
    assert sorted(second.stdout.splitlines()) == [
        "counter: unchanged (hooks: xdp@vb none; maps written: none)",
        "egress: unchanged (hooks: tc_egress@vb none; maps written: none)",
        "filter: unchanged (hooks: xdp@vb none; maps written: none)",
    ]
    assert chain_of(state_dir) == chain and xdp_of(lab["server"])["prog"]["id"] == chain[0][1]

    # metrics, as the timer's service writes them, parsed as Prometheus does
    textfile = tmp_path / "textfile"
    proc = run_unit("ebpf-fleet-metrics.service", lab["server"], state_dir, str(textfile))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    series = parse_metrics(textfile / "ebpf_fleet.prom")
    tag = libbpf_tag(chain[1][1])
    info = series[
        (
            "ebpf_fleet_program_info",
            (("deployment", "filter"), ("hook", "xdp"), ("id", str(chain[1][1])), ("interface", "vb"), ("mode", "native"), ("tag", tag), ("version", "1")),
        )
    ]
    assert info == 1
    assert series[("ebpf_fleet_in_sync", (("deployment", "filter"), ("hook", "xdp"), ("interface", "vb")))] == 1
    assert series[("ebpf_fleet_chain_position", (("deployment", "filter"), ("hook", "xdp"), ("interface", "vb")))] == 2
    assert series[("ebpf_fleet_chain_position", (("deployment", "counter"), ("hook", "xdp"), ("interface", "vb")))] == 1
    drops = series[("ebpf_fleet_packets_total", (("counter", "port_drop"), ("deployment", "filter"), ("map", "filter_stats")))]
    passes = series[("ebpf_fleet_packets_total", (("counter", "default_pass"), ("deployment", "filter"), ("map", "filter_stats")))]
    assert drops > 0 and passes > 0  # the flows sent after the restore (counters start empty)
    assert series[("ebpf_fleet_bytes_total", (("counter", "port_drop"), ("deployment", "filter"), ("map", "filter_stats")))] >= drops * 60
    assert series[("ebpf_fleet_scrape_error", (("deployment", "filter"),))] == 0
    for map_name in DECLARED:  # the maps hold what bpf_map declared (drift.py)
        assert series[("ebpf_fleet_map_in_sync", (("deployment", "filter"), ("map", map_name)))] == 1
    assert series[("ebpf_fleet_packets_total", (("counter", "3_drop"), ("deployment", "egress"), ("map", "egress_stats")))] > 0  # class 3, outcome drop
    assert series[("ebpf_fleet_in_sync", (("deployment", "egress"), ("hook", "tc_egress"), ("interface", "vb")))] == 1
    assert not [p for p in os.listdir(textfile) if p != "ebpf_fleet.prom"]  # no temporary file left

    # drift: the hook's link taken away behind the records' back is reported, and the next restore repairs it
    bpffs.unpin(os.path.join(bpffs.hook_dir(lab["pin_root"], "xdp", "vb"), "link"))
    assert not xdp_of(lab["server"])
    run_unit("ebpf-fleet-metrics.service", lab["server"], state_dir, str(textfile))
    series = parse_metrics(textfile / "ebpf_fleet.prom")
    assert series[("ebpf_fleet_in_sync", (("deployment", "filter"), ("hook", "xdp"), ("interface", "vb")))] == 0
    assert series[("ebpf_fleet_map_in_sync", (("deployment", "filter"), ("map", "filter_config")))] == 1
    third = run_unit("ebpf-fleet-restore.service", lab["server"], state_dir)
    assert third.returncode == 0 and "restored" in third.stdout, third.stdout + third.stderr
    assert verdicts(lab)[0] == 0


def test_a_deployment_that_cannot_be_restored_is_reported_and_the_others_still_are(host, run_module):
    lab, state_dir = host, host["state_dir"]
    lab["server"].veth("vc", "vd")
    ok(
        run_module(
            "xdp_program",
            {
                "name": "lost",
                "object": paths.bpf_object("xdp_count"),
                "interfaces": ["vc"],
                "mode": "native",
                "pin_root": lab["pin_root"],
                "state_dir": state_dir,
            },
            netns=lab["server"],
        )
    )
    wipe_as_a_reboot_does(lab)
    lab["server"].ip("link", "del", "vc")  # the interface did not come back after the reboot
    proc = run_unit("ebpf-fleet-restore.service", lab["server"], state_dir)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert lines["lost"].startswith("failed: ") and "vc" in lines["lost"], lines
    assert lines["filter"].startswith("restored") and lines["counter"].startswith(("restored", "unchanged"))
    assert verdicts(lab)[0] == 0


def libbpf_tag(prog_id: int) -> str:
    fd = libbpf.prog_fd_by_id(prog_id)
    try:
        return libbpf.prog_info(fd)["tag"]
    finally:
        os.close(fd)


def parse_metrics(path) -> dict:
    pytest.importorskip("prometheus_client.parser")
    return host_units.parse_metrics(path)
