"""playbooks/status.yml and playbooks/remove.yml through ansible-playbook on a lab host (a network namespace):
deployments made by the modules (the XDP filter behind a counting program in one chain, the egress TC program,
map contents declared through bpf_map), the load-balancer backend role; status in sync, then drifted after a
map entry changed by hand and after the XDP program was replaced behind the collection's back; the JSON report
parsed; remove leaves no pins, records or attachments, a second remove and check mode change nothing."""

import json
import os
import re
import subprocess

import pytest
from harness import paths
from harness.runner import run_playbook
from harness.traffic import udp_count

from ansible_collections.ebpf.fleet.plugins.filter.xdp_filter_port_entries import xdp_filter_port_entries
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import MapCodec

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

STATUS = os.path.join(paths.REPO, "playbooks", "status.yml")
REMOVE = os.path.join(paths.REPO, "playbooks", "remove.yml")
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", re.M)
DROPPED_PORT, OPEN_PORT = 5001, 5002
VIP = "198.51.100.10"

BACKEND = """
- name: Load-balancer backend
  hosts: lb_backend
  gather_facts: false
  roles:
    - role: ebpf.fleet.lb_backend
"""


def ok(result):
    assert not result.failed, result.get("msg") or result["_stderr"]
    return result


class Lab:
    """A client and an edge host over a veth (va -- vb); the edge is the lab host the playbooks run on."""

    def __init__(self, netns, pin_root, state_dir, tmp_path, run_module):
        self.client, self.edge, self.quiet = netns("stc"), netns("ste"), netns("stq")
        self.client.veth("va", "vb", peer_ns=self.edge, addr_a="198.51.100.1/24", addr_b="198.51.100.2/24")
        self.pin_root, self.state_dir, self.tmp = pin_root, state_dir, tmp_path
        self.run_module = run_module
        self.sysctl_file = str(tmp_path / "sysctl.d" / "60-lb-backend.conf")
        os.makedirs(os.path.dirname(self.sysctl_file))
        self.inventory = str(tmp_path / "inventory.ini")
        with open(self.inventory, "w", encoding="utf-8") as handle:
            # remove.yml ends with bpf_host absent: its paths are this test's, not the machine's /etc
            host_paths = " ".join(
                "bpf_host_%s=%s" % (name, tmp_path / "host" / path)
                for name, path in (
                    ("fstab_file", "etc/fstab"),
                    ("default_file", "etc/default/ebpf-fleet"),
                    ("unit_dir", "etc/systemd/system"),
                    ("command_path", "usr/local/sbin/ebpf-fleet-host"),
                    ("lib_dir", "usr/local/lib/ebpf-fleet"),
                    ("metrics_dir", "var/lib/node-exporter"),
                )
            )
            handle.write(
                "[lb_backend]\nedge ansible_connection=ebpf.fleet.netns ansible_netns=%s "
                "ebpf_fleet_pin_root=%s ebpf_fleet_state_dir=%s lb_backend_sysctl_file=%s %s\n"
                % (self.edge.name, pin_root, state_dir, self.sysctl_file, host_paths)
            )
            # a second host with nothing deployed: its own line, in sync, untouched by edge's drift
            handle.write(
                "[others]\nquiet ansible_connection=ebpf.fleet.netns ansible_netns=%s "
                "ebpf_fleet_pin_root=%s ebpf_fleet_state_dir=%s\n" % (self.quiet.name, pin_root + "q", tmp_path / "quiet_state")
            )
        self.report = str(tmp_path / "report" / "status.json")
        os.makedirs(os.path.dirname(self.report))

    def module(self, module_name, **args):
        return ok(self.run_module(module_name, dict(args, pin_root=self.pin_root, state_dir=self.state_dir), netns=self.edge))

    def deploy(self):
        """The filter (priority 10) behind a counting program (priority 5) on vb's XDP hook, native; its maps
        declared; the egress TC program on vb, one class dropping UDP to OPEN_PORT; the backend role's VIP."""
        common = {"interfaces": ["vb"], "mode": "native"}
        self.module("xdp_program", name="filter", object=paths.bpf_object("xdp_filter"), priority=10, **common)
        self.module("xdp_program", name="counter", object=paths.bpf_object("xdp_count"), priority=5, **common)
        self.module("bpf_map", name="filter", map="filter_config", mode="sync", entries=[{"key": 0, "value": {"default_verdict": "pass"}}])
        self.module(
            "bpf_map",
            name="filter",
            map="filter_ports",
            mode="sync",
            entries=xdp_filter_port_entries([{"proto": "udp", "port": DROPPED_PORT, "action": "drop", "rule_id": 11}]),
        )
        self.module("tc_program", name="egress", object=paths.bpf_object("tc_egress"), direction="egress", interfaces=["vb"])
        (self.tmp / "backend.yml").write_text(BACKEND)
        proc = self.play(str(self.tmp / "backend.yml"), lb_backend_vips=[VIP])
        assert proc.returncode == 0, proc.stdout

    def play(self, playbook, check=False, **variables):
        proc = run_playbook(playbook, inventory=self.inventory, extra_vars=variables or None, check=check, diff=check)
        out = proc.stdout + proc.stderr
        assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out
        return proc

    def status(self, **variables):
        proc = self.play(STATUS, ebpf_fleet_status_json=self.report, **variables)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert changed(proc) == 0, proc.stdout
        with open(self.report, encoding="utf-8") as handle:
            return json.load(handle), proc.stdout

    def sh(self, *argv, check=True) -> str:
        return subprocess.run(["nsenter", "--net=/run/netns/%s" % self.edge.name] + list(argv), capture_output=True, text=True, check=check).stdout

    def xdp(self) -> dict:
        return json.loads(self.edge.ip("-j", "-d", "link", "show", "vb").stdout)[0].get("xdp") or {}

    def net(self) -> dict:
        """The programs on vb's XDP and TC hooks (TCX and clsact), whoever attached them, by id and name, as the
        kernel reports them (BPF_PROG_QUERY and netlink through bpf_info; this bpftool predates TCX)."""
        info = ok(self.run_module("bpf_info", {"interfaces": ["vb"]}, netns=self.edge))["interfaces"]["vb"]
        return {
            hook: sorted((p["id"], p["name"]) for p in (info[hook]["programs"] if hook == "xdp" else info[hook])) for hook in ("xdp", "tc_ingress", "tc_egress")
        }

    def vips(self) -> list:
        links = json.loads(self.sh("ip", "-j", "addr", "show", "dev", "lo"))
        return sorted(a["local"] for link in links for a in link.get("addr_info", []) if a["family"] == "inet")

    def kernel_and_disk(self) -> tuple:
        """Everything remove.yml takes away, as a comparable snapshot."""
        pins = sorted(os.path.join(d, f) for d, _s, fs in os.walk(self.pin_root) for f in fs)
        recs = sorted(os.path.join(d, f) for d, _s, fs in os.walk(self.state_dir) for f in fs)
        return (pins, recs, os.path.isdir(self.pin_root), os.path.isdir(self.state_dir), self.xdp(), self.net(), self.vips(), os.path.exists(self.sysctl_file))


def changed(proc) -> int:
    return int(dict(RECAP.findall(proc.stdout))["edge"])


def status_lines(stdout: str, host: str = "edge") -> list:
    return [line.strip().strip('",') for line in stdout.splitlines() if line.strip().startswith('"%s ' % host)]


@pytest.fixture
def lab(netns, pin_root, state_dir, tmp_path, run_module):
    return Lab(netns, pin_root, state_dir, tmp_path, run_module)


def hand_edit_filter_config(lab, **fields):
    """Change filter_config's element 0 behind the collection's back (the bpf() syscall, as bpftool would)."""
    fd = libbpf.obj_get(bpffs.map_pin(lab.pin_root, "filter", "filter_config"))
    with libbpf.fd_closing(fd):
        codec = MapCodec.for_fd(fd)
        key = codec.encode_key(0)
        value = codec.decode_value(libbpf.map_lookup(fd, key, codec.value_buf_size))
        value.update(fields)
        libbpf.map_update(fd, key, codec.encode_value(value))


def test_status_in_sync_then_drifted_by_a_hand_edited_map_and_a_replaced_program(lab):
    lab.deploy()
    sent, received = udp_count(lab.client, lab.edge, "198.51.100.2", DROPPED_PORT)
    assert sent > 0 and received == 0

    report, stdout = lab.status()
    assert report["status"] == "in_sync" and report["hosts"]["edge"]["status"] == "in_sync", report
    deps = report["hosts"]["edge"]["deployments"]
    assert sorted(deps) == ["counter", "egress", "filter"]
    vb = deps["filter"]["interfaces"]["vb"]
    assert (vb["hook"], vb["mode"], vb["program"], vb["in_sync"], vb["position"]) == ("xdp", "native", "recorded", True, 2)
    assert vb["prog_id"] == vb["recorded_prog_id"] > 0
    assert deps["counter"]["interfaces"]["vb"]["prog_id"] == lab.xdp()["prog"]["id"]  # first in the chain
    assert deps["filter"]["version"] == 1 and deps["filter"]["state"] == "in_sync" and deps["filter"]["reasons"] == []
    assert deps["filter"]["counters"]["filter_stats"]["verdicts"]["drop"] >= sent
    assert deps["egress"]["interfaces"]["vb"]["hook"] == "tc_egress"
    assert all(m["in_sync"] for m in deps["filter"]["maps"]) and {m["map"] for m in deps["filter"]["maps"]} == {"filter_config", "filter_ports"}
    lines = status_lines(stdout)
    assert len(lines) == 3, stdout
    [filter_line] = [line for line in lines if line.startswith("edge filter ")]
    assert filter_line.startswith("edge filter xdp@vb v1 native program=recorded in_sync counters: ")
    assert "filter_stats.drop=%d" % deps["filter"]["counters"]["filter_stats"]["verdicts"]["drop"] in filter_line
    assert "drift:" not in stdout
    assert report["hosts"]["quiet"] == {"status": "in_sync", "deployments": {}}
    assert status_lines(stdout, "quiet") == ["quiet - - - - - in_sync (no deployment)"]
    assert report["lines"] == sorted(lines) + ["quiet - - - - - in_sync (no deployment)"]

    # a map entry changed by hand: that deployment drifts, naming the map and the key; the others stay in sync
    hand_edit_filter_config(lab, default_verdict="drop")
    report, stdout = lab.status(ebpf_fleet_status_print=True)
    assert report["hosts"]["edge"]["status"] == "drifted"
    deps = report["hosts"]["edge"]["deployments"]
    assert deps["filter"]["state"] == "drifted" and deps["counter"]["state"] == deps["egress"]["state"] == "in_sync"
    [config] = [m for m in deps["filter"]["maps"] if m["map"] == "filter_config"]
    assert (config["in_sync"], config["changed"], config["missing"], config["extra"], config["keys"]) == (False, 1, 0, 0, [0])
    assert deps["filter"]["reasons"] == ["map filter_config: 1 changed by hand (0)"]
    assert deps["filter"]["interfaces"]["vb"]["program"] == "recorded"
    [filter_line] = [line for line in status_lines(stdout) if line.startswith("edge filter ")]
    assert " drifted " in filter_line and filter_line.endswith("drift: map filter_config: 1 changed by hand (0)")
    printed = [line for line in stdout.splitlines() if '\\"status\\": \\"drifted\\"' in line]
    assert printed, stdout  # ebpf_fleet_status_print: the same document in the play's output
    # ... and the flag for cron and CI fails the run on drift, naming the host and what drifted
    proc = lab.play(STATUS, ebpf_fleet_status_json="", ebpf_fleet_status_fail_on_drift=True)
    assert proc.returncode != 0 and "edge drifted from its records: map filter_config" in proc.stdout, proc.stdout
    assert re.search(r"^quiet\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", proc.stdout, re.M), proc.stdout
    assert report["hosts"]["quiet"]["status"] == "in_sync"
    hand_edit_filter_config(lab, default_verdict="pass")
    report, _stdout = lab.status()
    assert report["hosts"]["edge"]["status"] == "in_sync"

    # the XDP program replaced behind the collection's back: the link detached, another program attached
    link = json.loads(lab.sh("bpftool", "-j", "link", "show", "pinned", os.path.join(bpffs.hook_dir(lab.pin_root, "xdp", "vb"), "link")))
    lab.sh("bpftool", "link", "detach", "id", str(link["id"]))
    lab.edge.ip("link", "set", "dev", "vb", "xdpdrv", "obj", paths.bpf_object("xdp_plain_pass"), "sec", "xdp")
    foreign = lab.xdp()["prog"]["id"]
    report, stdout = lab.status()
    deps = report["hosts"]["edge"]["deployments"]
    assert report["hosts"]["edge"]["status"] == "drifted" and deps["egress"]["state"] == "in_sync"
    for name in ("counter", "filter"):
        assert deps[name]["state"] == "drifted"
        assert deps[name]["interfaces"]["vb"]["program"] != "recorded"
        assert deps[name]["reasons"] == ["xdp@vb runs program %d (xdp_plain_pass), not the recorded chain: replaced behind the collection's back" % foreign], (
            deps[name]
        )
        assert deps[name]["interfaces"]["vb"]["prog_id"] == foreign
    drifted = [line for line in status_lines(stdout) if " drifted " in line]
    assert len(drifted) == 2 and all("program=other(id %d)" % foreign in line and "xdp_plain_pass" in line for line in drifted), stdout


def test_remove_leaves_no_pins_records_or_attachments_and_a_second_run_changes_nothing(lab):
    pristine = lab.kernel_and_disk()
    lab.deploy()
    # a deployment no role makes, on a second interface
    lab.edge.veth("vc", "vd")
    lab.module("xdp_program", name="stray", object=paths.bpf_object("xdp_drop_udp"), interfaces=["vc"])
    deployed = lab.kernel_and_disk()
    assert deployed[4] and deployed[5]["tc_egress"] and deployed[6] == ["127.0.0.1", VIP], deployed

    check = lab.play(REMOVE, check=True)
    assert check.returncode == 0 and changed(check) > 0, check.stdout
    assert lab.kernel_and_disk() == deployed

    gone = lab.play(REMOVE)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    now = lab.kernel_and_disk()
    assert now[0] == [] and now[1] == [] and not now[2] and not now[3], now  # no pins, no records, no folders
    assert now[4] == {} and now[5] == {"xdp": [], "tc_ingress": [], "tc_egress": []}, now  # nothing on vb
    assert not json.loads(lab.edge.ip("-j", "-d", "link", "show", "vc").stdout)[0].get("xdp")
    assert now[6] == ["127.0.0.1"] and not now[7]  # the backend role's VIP, sysctls
    assert now[4:] == pristine[4:]

    again = lab.play(REMOVE)
    assert again.returncode == 0 and changed(again) == 0, again.stdout
    check = lab.play(REMOVE, check=True)
    assert check.returncode == 0 and changed(check) == 0, check.stdout

    report, stdout = lab.status()
    assert report["status"] == "in_sync" and report["hosts"]["edge"] == {"status": "in_sync", "deployments": {}}
    assert report["lines"] == ["edge - - - - - in_sync (no deployment)", "quiet - - - - - in_sync (no deployment)"]
