"""ebpf.fleet.bpf_checkpoint on real programs, maps and packets: arm, the watchdog's own revert, confirm, commit,
explicit revert, rollback through the history, and the revert at boot of a change that was never confirmed.

The modules run as Ansible runs them on a host (a process each, JSON in and out) inside a namespace; the
watchdog is the real detached process the module starts (this machine has no systemd, so the systemd launcher
is exercised in the VM scenarios). Over a real SSH connection the same module runs in test_rollouts.py.
"""

import json
import os
import subprocess
import time

import pytest
from harness import paths
from harness.traffic import udp_count

from ansible_collections.ebpf.fleet.plugins.filter.xdp_filter_v4_entries import xdp_filter_v4_entries
from ansible_collections.ebpf.fleet.plugins.module_utils.host import checkpoint, records
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_records, map_sync
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import read_entries

pytestmark = pytest.mark.kernel

PORT = 9999  # the port xdp_drop_udp drops (tests/bpf/drop_udp.h)


def ok(result):
    assert not result.failed, result.get("msg") or result["_stderr"]
    return result


@pytest.fixture
def host(netns, pin_root, state_dir, run_module):
    """A client and a server namespace over a veth; the server runs `guard` (xdp_count: passes everything) and the
    filter with a declared rule set, on vb in native mode."""
    client, server = netns("cc"), netns("cs")
    client.veth("va", "vb", peer_ns=server, addr_a="198.51.100.1/24", addr_b="198.51.100.2/24")
    lab = {"client": client, "server": server, "pin_root": pin_root, "state_dir": state_dir}

    def run(module, args, **kwargs):
        return run_module(module, dict({"pin_root": pin_root, "state_dir": state_dir}, **args), netns=server, **kwargs)

    lab["run"] = run
    ok(run("xdp_program", {"name": "guard", "object": paths.bpf_object("xdp_count"), "interfaces": ["vb"], "mode": "native", "priority": 5}))
    ok(run("xdp_program", {"name": "filter", "object": paths.bpf_object("xdp_filter"), "interfaces": ["vb"], "mode": "native", "priority": 10}))
    declare(lab, ["203.0.113.0/24"])
    return lab


def declare(lab, cidrs):
    return ok(
        lab["run"](
            "bpf_map", {"name": "filter", "map": "filter_v4", "mode": "sync", "entries": xdp_filter_v4_entries([{"cidr": c, "action": "drop"} for c in cidrs])}
        )
    )


def state(lab) -> dict:
    """What must come back exactly: the chain (deployment, tag, position), the mode, the declared rules."""
    link = json.loads(lab["server"].ip("-j", "-d", "link", "show", "vb").stdout)[0]
    rec = records.read_hook(lab["state_dir"], "xdp@vb") or {"entries": []}
    tags = {}
    for entry in rec["entries"]:
        fd = libbpf.obj_get(bpffs.prog_pin(lab["pin_root"], entry["deployment"], "xdp", "vb"))
        try:
            tags[entry["deployment"]] = libbpf.prog_info(fd)["tag"]
        finally:
            os.close(fd)
    outer = libbpf.obj_get(bpffs.map_pin(lab["pin_root"], "filter", "filter_v4"))
    fd = map_sync.inner_map_fd(outer, libbpf.map_info(outer))  # the rule set is the map of maps' inner map
    try:
        rules = sorted(json.dumps(e, sort_keys=True) for e in read_entries(fd))
    finally:
        os.close(fd)
        os.close(outer)
    return {
        "chain": [(e["deployment"], tags[e["deployment"]]) for e in rec["entries"]],
        "mode": (link.get("xdp") or {}).get("mode"),
        "rules": rules,
        "sha": {name: records.read_deployment(lab["state_dir"], name)["object_sha256"] for name in records.list_deployments(lab["state_dir"])},
    }


def passes(lab) -> bool:
    sent, got = udp_count(lab["client"], lab["server"], "198.51.100.2", PORT)
    assert sent > 0
    return got > 0


def leftovers(lab) -> list:
    """Anything still armed: checkpoint files, a watchdog process."""
    found = []
    if os.path.exists(os.path.join(lab["state_dir"], ".checkpoint")):
        found.append(sorted(os.listdir(os.path.join(lab["state_dir"], ".checkpoint"))))
    procs = subprocess.run(
        ["pgrep", "-af", "module_utils.host.checkpoint watch --state-dir %s " % lab["state_dir"]], capture_output=True, text=True, check=False
    ).stdout.strip()
    if procs:
        found.append(procs)
    return found


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError("not within %ss" % timeout)


def test_an_unconfirmed_change_is_reverted_by_the_watchdog_to_the_exact_previous_state(host):
    before = state(host)
    assert passes(host)
    armed = ok(host["run"]("bpf_checkpoint", {"state": "armed", "timeout": 4}))
    assert not armed.changed and armed["deployments"] == ["filter", "guard"]
    assert leftovers(host)[1:] == []  # the watchdog starts with the change, not before
    # the change: guard becomes a program that drops UDP, the filter gets another rule set, a new deployment
    ok(host["run"]("xdp_program", {"name": "guard", "object": paths.bpf_object("xdp_drop_udp"), "interfaces": ["vb"], "mode": "native", "priority": 5}))
    declare(host, ["192.0.2.0/24", "198.51.100.64/26"])
    ok(host["run"]("xdp_program", {"name": "extra", "object": paths.bpf_object("xdp_plain_pass"), "interfaces": ["vb"], "mode": "native", "priority": 20}))
    changed_at = time.monotonic()
    pending = records.read_json(os.path.join(host["state_dir"], ".checkpoint", "pending.json"))
    assert pending["launcher"] == "process" and leftovers(host)[1:]  # no systemd here: a detached process
    assert not passes(host) and state(host) != before
    reverted_at = wait_for(lambda: not os.path.exists(os.path.join(host["state_dir"], ".checkpoint")), 15)
    # the window counts from the change's last step (4 s), the watchdog polls twice a second
    assert reverted_at - changed_at < 4 + 3
    after = state(host)
    assert after == before and passes(host)
    assert leftovers(host) == []
    report = records.read_json(os.path.join(host["state_dir"], ".reverted.json"))
    assert report["by"] == "watchdog" and "not confirmed within 4s" in report["reason"]
    assert report["deployments"]["extra"]["status"] == "removed"
    assert report["deployments"]["guard"]["status"] == "restored"
    assert not os.path.exists(bpffs.deployment_dir(host["pin_root"], "extra"))
    # the controller comes back too late: its confirm fails and says why
    late = host["run"]("bpf_checkpoint", {"state": "committed", "token": armed["token"]})
    assert late.failed and late["msg"].startswith("rolled back at ") and "not confirmed within 4s" in late["msg"]
    assert "guard restored" in late["msg"]


def test_each_module_run_restarts_the_window_and_a_confirm_in_time_keeps_the_change(host):
    armed = ok(host["run"]("bpf_checkpoint", {"state": "armed", "timeout": 3}))
    for cidrs in (["192.0.2.0/24"], ["192.0.2.0/25"], ["192.0.2.0/26"]):
        time.sleep(1.5)  # 4.5 s in all, but never 3 s after a step
        declare(host, cidrs)
    changed = state(host)
    confirmed = ok(host["run"]("bpf_checkpoint", {"state": "committed", "token": armed["token"]}))
    assert confirmed["deployments"] == ["filter"]
    assert leftovers(host) == []
    time.sleep(4)
    assert state(host) == changed
    assert os.listdir(os.path.join(host["state_dir"], ".history", "filter")) == ["1"]
    # a second confirm of the same token names what happened to it
    again = host["run"]("bpf_checkpoint", {"state": "committed", "token": armed["token"]})
    assert again.failed and "no checkpoint %s is armed" % armed["token"] in again["msg"]


def test_a_read_on_the_host_restarts_the_window_of_a_started_change_but_never_confirms_it(host):
    # a role's checks between two roles' steps read the host with bpf_info; on a slow host they alone outlasted
    # the window (the molecule VM under TCG): once the change has started, a read starts the window again
    activity = os.path.join(host["state_dir"], ".checkpoint", records.CHECKPOINT_ACTIVITY)
    armed = ok(host["run"]("bpf_checkpoint", {"state": "armed", "timeout": 30}))
    ok(host["run"]("bpf_info", {}))
    assert not os.path.exists(activity)  # not started: a read does not start it
    declare(host, ["192.0.2.0/24"])  # the first step
    long_ago = time.time() - 20
    os.utime(activity, (long_ago, long_ago))
    ok(host["run"]("bpf_info", {}, check_mode=True))
    assert os.stat(activity).st_mtime == pytest.approx(long_ago, abs=0.01)  # check mode moves nothing
    before = time.time()
    ok(host["run"]("bpf_info", {"query": "keys(deployments)"}))
    assert os.stat(activity).st_mtime >= before - 1
    pending = checkpoint.read_pending(host["state_dir"])
    assert pending["token"] == armed["token"] and pending["state"] == "armed"  # still armed: a read confirms nothing
    ok(host["run"]("bpf_checkpoint", {"state": "committed", "token": armed["token"]}))
    assert leftovers(host) == []


def test_an_explicit_revert_and_check_mode(host):
    before = state(host)
    assert ok(host["run"]("bpf_checkpoint", {"state": "armed"}, check_mode=True))["token"] == ""
    assert leftovers(host) == []
    armed = ok(host["run"]("bpf_checkpoint", {"state": "armed", "timeout": 60}))
    declare(host, ["192.0.2.0/24"])
    predicted = ok(host["run"]("bpf_checkpoint", {"state": "reverted", "token": armed["token"]}, check_mode=True))
    assert predicted.changed and state(host) != before
    reverted = ok(host["run"]("bpf_checkpoint", {"state": "reverted", "token": armed["token"], "reason": "a task of the change failed"}))
    assert reverted.changed and reverted["reverted"]["reason"] == "a task of the change failed"
    assert state(host) == before and leftovers(host) == []
    bad = host["run"]("bpf_checkpoint", {"state": "committed", "token": "../x"})
    assert bad.failed and "token=" in bad["msg"] and "Traceback" not in bad["_stderr"]


def test_rollback_walks_the_history_back_to_before_the_first_deploy(host):
    v1 = state(host)
    for obj, cidrs in (("xdp_drop_udp", ["192.0.2.0/24"]), ("xdp_count", ["198.51.100.64/26"])):
        armed = ok(host["run"]("bpf_checkpoint", {"state": "armed"}))
        ok(host["run"]("xdp_program", {"name": "guard", "object": paths.bpf_object(obj), "interfaces": ["vb"], "mode": "native", "priority": 5}))
        declare(host, cidrs)
        ok(host["run"]("bpf_checkpoint", {"state": "committed", "token": armed["token"]}))
        if obj == "xdp_drop_udp":
            v2 = state(host)
    predicted = ok(host["run"]("bpf_checkpoint", {"state": "rolled_back"}, check_mode=True))
    assert predicted["rolled_back"] == {"filter": {"status": "would restore", "history": 2}, "guard": {"status": "would restore", "history": 2}}
    first = ok(host["run"]("bpf_checkpoint", {"state": "rolled_back"}))
    assert first.changed and state(host) == v2 and not passes(host)
    second = ok(host["run"]("bpf_checkpoint", {"state": "rolled_back", "names": ["guard", "filter"]}))
    assert second.changed and state(host) == v1 and passes(host)
    nothing = host["run"]("bpf_checkpoint", {"state": "rolled_back", "names": ["guard"]})
    assert nothing.failed and "guard has no earlier version" in nothing["msg"]
    assert not ok(host["run"]("bpf_checkpoint", {"state": "rolled_back"})).changed
    # a deployment first made by a committed change rolls back to not deployed
    armed = ok(host["run"]("bpf_checkpoint", {"state": "armed"}))
    ok(host["run"]("xdp_program", {"name": "extra", "object": paths.bpf_object("xdp_plain_pass"), "interfaces": ["vb"], "mode": "native", "priority": 20}))
    ok(host["run"]("bpf_checkpoint", {"state": "committed", "token": armed["token"]}))
    gone = ok(host["run"]("bpf_checkpoint", {"state": "rolled_back", "names": ["extra"]}))
    assert gone["rolled_back"]["extra"]["status"] == "removed" and state(host) == v1


def test_a_host_restarting_inside_the_window_reverts_at_boot(host, run_module):
    """The watchdog dies with the host; the boot-time restore (ebpf-fleet-host restore) reverts instead."""
    before = state(host)
    armed = ok(host["run"]("bpf_checkpoint", {"state": "armed", "timeout": 600}))
    declare(host, ["192.0.2.0/24"])
    pending = records.read_json(os.path.join(host["state_dir"], ".checkpoint", "pending.json"))
    os.kill(pending["pid"], 9)
    wait_for(lambda: not leftovers(host)[1:], 5)
    env = dict(os.environ, PYTHONPATH=paths.COLLECTIONS, EBPF_FLEET_STATE_DIR=host["state_dir"])
    proc = host["server"].run([paths.PYTHON, "-m", "ansible_collections.ebpf.fleet.plugins.module_utils.host.restore", "restore"], check=False, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "filter: reverted" in proc.stdout
    assert state(host) == before and leftovers(host) == []
    late = host["run"]("bpf_checkpoint", {"state": "confirmed", "token": armed["token"]})
    assert late.failed and "watchdog is gone" in late["msg"]
    assert map_records.listed(host["state_dir"], "filter") == ["filter_v4"]
