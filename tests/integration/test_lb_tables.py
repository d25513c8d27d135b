"""lb_tables on the real kernel: xdp_lb loaded with xdp_program on a veth, its maps declared by lb_tables, real TCP
connections held open through the LB while single backends are added, removed, reweighted and drained.

    client --+
             |  (bridge in a switch namespace)
    lb ------+   xdp_lb (loaded by ebpf.fleet.xdp_program) on the LB's veth, DSR, XDP_TX back to the bridge
    b1..b4 --+   VIP on lo, an echo server answering with the backend's name on every line
"""

import hashlib
import json
import os
import subprocess
import sys

import pytest
from harness import paths
from harness.runner import run_playbook

from ansible_collections.ebpf.fleet.plugins.filter.maglev_entries import maglev_entries
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import MapCodec, read_entries, read_raw

pytestmark = pytest.mark.kernel

VIP = "192.0.2.10"
VIP2 = "192.0.2.20"
CLIENT = "198.51.100.100"
LB_IP = "198.51.100.1"
LB_MAC = "02:00:00:51:00:01"
BACKENDS = {
    "b1": ("198.51.100.11", "02:00:00:51:00:11"),
    "b2": ("198.51.100.12", "02:00:00:51:00:12"),
    "b3": ("198.51.100.13", "02:00:00:51:00:13"),
    "b4": ("198.51.100.14", "02:00:00:51:00:14"),
}
NAME_OF = {addr: name for name, (addr, _mac) in BACKENDS.items()}
RING = 1009
MAPS = ("lb_config", "lb_backends", "lb_vips_v4", "lb_vips_v6", "lb_ring")

# one thread per connection: every line received is answered with the backend's name
SERVER = """
import socket, sys, threading
def serve(c):
    f = c.makefile("rb")
    for line in f:
        c.sendall(sys.argv[1].encode() + b"\\n")
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(256)
print("ready", flush=True)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# holds connections open; on every line of stdin sends one line on each and prints who answered
HOLDER = """
import json, socket, sys
conns = {}
for sport in json.loads(sys.argv[2]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.settimeout(3)
    s.bind((sys.argv[3], sport))
    try:
        s.connect((sys.argv[1], 80)); conns[sport] = (s, s.makefile("rb"))
    except OSError as exc:
        conns[sport] = None
print("connected", flush=True)
for _cmd in sys.stdin:
    out = {}
    for sport, pair in conns.items():
        if pair is None:
            out[sport] = "error: not connected"; continue
        try:
            pair[0].sendall(b"ping\\n"); out[sport] = pair[1].readline().decode().strip() or "error: closed"
        except OSError as exc:
            out[sport] = "error: %s" % exc
    print(json.dumps(out), flush=True)
"""


def backend(name, weight=None, **extra):
    addr, mac = BACKENDS[name]
    item = {"address": addr, "mac": mac}
    if weight is not None:
        item["weight"] = weight
    item.update(extra)
    return item


def vips_of(*names, weights=None, vip=VIP):
    weights = weights or {}
    return [{"vip": vip, "port": 80, "proto": "tcp", "mode": "dsr", "backends": [backend(n, weights.get(n)) for n in names]}]


class Lab:
    def __init__(self, netns, pin_root, state_dir, run_module):
        self.pin_root, self.state_dir, self.run_module = pin_root, state_dir, run_module
        self.procs = []
        sw = netns("sw")
        sw.bridge("br0")
        self.sw = sw
        self.client = netns("cl")
        self.lbns = netns("lb")
        self.plug(self.client, "c0", "02:00:00:51:00:64", CLIENT, "pcl")
        self.client.run(["ethtool", "-K", "c0", "tx", "off"])  # XDP_TX does not finish a partial checksum
        self.plug(self.lbns, "l0", LB_MAC, LB_IP, "plb")
        self.client.ip("route", "add", VIP + "/32", "via", LB_IP)
        self.client.ip("route", "add", VIP2 + "/32", "via", LB_IP)
        for name, (addr, mac) in BACKENDS.items():
            ns = netns(name)
            self.plug(ns, "e0", mac, addr, "p" + name)
            for vip in (VIP, VIP2):
                ns.ip("addr", "add", vip + "/32", "dev", "lo")
            for pair in (
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv4.conf.e0.rp_filter=0",
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
            ):
                ns.run(["sysctl", "-q", "-w", pair])
            proc = subprocess.Popen(["nsenter", "--net=%s" % ns.path, sys.executable, "-c", SERVER, name], stdout=subprocess.PIPE, text=True)
            self.procs.append(proc)
            assert proc.stdout.readline().strip() == "ready"
        res = run_module(
            "xdp_program",
            {"name": "lb", "object": paths.bpf_object("xdp_lb"), "interfaces": ["l0"], "pin_root": pin_root, "state_dir": state_dir},
            netns=self.lbns,
        )
        assert res.changed and not res.failed, res

    def plug(self, ns, ifname, mac, addr, port):
        self.sw.plug_lb_host(ns, ifname, mac, addr, port, paths.bpf_object("lb_floor_pass"))

    def args(self, vips, **kw):
        return dict({"name": "lb", "vips": vips, "ring_size": RING, "pin_root": self.pin_root, "config": {"lb_mac": LB_MAC}}, **kw)

    def tables(self, vips, check=False, diff=False, **kw):
        return self.run_module("lb_tables", self.args(vips, **kw), netns=self.lbns, check_mode=check, diff=diff)

    def map_entries(self, name):
        fd = libbpf.obj_get(bpffs.map_pin(self.pin_root, "lb", name))
        try:
            return read_entries(fd)
        finally:
            os.close(fd)

    def fingerprint(self):
        """sha256 of every map lb_tables writes, as bytes read from the kernel."""
        out = {}
        for name in MAPS:
            fd = libbpf.obj_get(bpffs.map_pin(self.pin_root, "lb", name))
            try:
                keys, values, count = read_raw(fd, MapCodec.for_fd(fd))
            finally:
                os.close(fd)
            out[name] = hashlib.sha256(keys + values).hexdigest() + ":%d" % count
        return out

    def live_vips(self):
        return {entry["key"]["vip"]: entry["value"] for entry in self.map_entries("lb_vips_v4")}

    def live_backends(self):
        """address -> id of lb_backends entries in use."""
        return {entry["value"]["addr4"]: entry["key"] for entry in self.map_entries("lb_backends") if entry["value"]["family"] == "ipv4"}

    def hold(self, sports, vip=VIP):
        cmd = ["nsenter", "--net=%s" % self.client.path, sys.executable, "-c", HOLDER, vip, json.dumps(sports), CLIENT]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout.readline().strip() == "connected"
        return proc

    @staticmethod
    def ping(proc):
        proc.stdin.write("ping\n")
        proc.stdin.flush()
        return {int(k): v for k, v in json.loads(proc.stdout.readline()).items()}

    def close(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()


@pytest.fixture
def lab(netns, pin_root, state_dir, run_module):
    lab = Lab(netns, pin_root, state_dir, run_module)
    try:
        yield lab
    finally:
        lab.close()


def test_first_deploy_changes_then_rerun_is_unchanged_and_check_mode_predicts_without_writing(lab):
    v6 = {
        "vip": "2001:db8::10",
        "port": 53,
        "proto": "udp",
        "mode": "ipip",
        "backends": [{"address": "2001:db8:1::1", "mac": "02:00:00:51:00:fe", "name": "v6-a"}, backend("b1")],
    }
    vips = vips_of("b1", "b2", "b3") + [v6]
    before = lab.fingerprint()
    check = lab.tables(vips, check=True, diff=True)
    assert check.changed and not check.failed, check
    assert lab.fingerprint() == before  # check mode wrote nothing
    assert check["applied"] == 0
    first = lab.tables(vips, diff=True)
    assert first.changed and not first.failed, first
    assert first["changes"] == check["changes"] and first["diff"] == check["diff"]  # check mode predicted it
    assert "vip 192.0.2.10:80/tcp (id 0, ring row 0, dsr, 3 backends)" in first["diff"]["after"]
    assert sorted(a["address"] for a in first["changes"]["backends_added"]) == sorted([BACKENDS[n][0] for n in ("b1", "b2", "b3")] + ["2001:db8:1::1"])
    (vip6,) = lab.map_entries("lb_vips_v6")
    assert vip6["key"] == {"vip": "2001:db8::10", "port": 53, "pad": 0, "proto": "udp"}
    assert vip6["value"] == {"id": 1, "ring": 1, "mode": "ipip"}
    # one lb_backends entry per address, shared by both VIPs
    assert lab.live_backends()[BACKENDS["b1"][0]] == first["backend_ids"][BACKENDS["b1"][0]]
    again = lab.tables(vips, diff=True)
    assert not again.changed and again["applied"] == 0, again
    assert again["diff"] == {"before": "", "after": ""}
    assert again["vips"] == first["vips"]
    # real TCP connections land on the backends of the declared VIP
    answers = lab.ping(lab.hold(list(range(21001, 21031))))
    assert set(answers.values()) == {"b1", "b2", "b3"}, answers


def test_one_backend_added_removed_reweighted_or_drained_keeps_the_others_ids_and_their_connections(lab):
    assert lab.tables(vips_of("b1", "b2", "b3")).changed
    holder = lab.hold(list(range(22001, 22041)))
    start = lab.ping(holder)
    assert set(start.values()) == {"b1", "b2", "b3"}, start
    steps = [
        ("add b4", vips_of("b1", "b2", "b3", "b4"), None),
        ("reweight b2", vips_of("b1", "b2", "b3", "b4", weights={"b2": 3}), None),
        ("drain b3", vips_of("b1", "b2", "b3", "b4", weights={"b2": 3, "b3": 0}), None),
        ("remove b1", vips_of("b2", "b3", "b4", weights={"b2": 3, "b3": 0}), "b1"),
    ]
    ids = lab.live_backends()
    for label, vips, removed in steps:
        row_before = lab.live_vips()[VIP]["ring"]
        res = lab.tables(vips, diff=True)
        assert res.changed and not res.failed, (label, res)
        now = lab.live_backends()
        for addr, bid in ids.items():
            if NAME_OF[addr] != removed:
                assert now[addr] == bid, "%s changed the id of %s" % (label, NAME_OF[addr])
        if removed:
            assert BACKENDS[removed][0] not in now  # its lb_backends entry is freed (family none)
        # the ring was swapped: a new row, and the old row is referenced by no VIP any more
        vip_now = lab.live_vips()[VIP]
        assert vip_now["ring"] != row_before, label
        assert row_before not in {v["ring"] for v in lab.live_vips().values()}
        change = res["changes"]["vips_changed"][0]
        assert change["ring"] == [row_before, vip_now["ring"]] and change["slots_moved"] > 0
        # established connections keep their backend (the drained one included); only the removed one's break
        answers = lab.ping(holder)
        for sport, name in start.items():
            if name != removed:
                assert answers[sport] == name, (label, sport, name, answers[sport])
        ids = dict(now)
        assert not lab.tables(vips).changed, label
    # the drained backend gets no new connection, the removed one neither
    fresh = lab.ping(lab.hold(list(range(23001, 23041))))
    assert set(fresh.values()) <= {"b2", "b4"} and "b2" in fresh.values(), fresh


def test_a_misspelt_field_fails_naming_it_before_any_map_changes(lab):
    assert lab.tables(vips_of("b1", "b2")).changed
    before = lab.fingerprint()
    bad_weight = vips_of("b1", "b2", "b3")
    bad_weight[0]["backends"][2]["wieght"] = 2
    res = lab.tables(bad_weight)
    assert res.failed and "vips[0].backends[2].wieght 2: expected no such field" in res["msg"], res
    assert "valid fields: address, mac, weight, name" in res["msg"]
    bad_list = [{"vip": VIP2, "port": 80, "backend": [backend("b1")]}] + vips_of("b1", "b2", "b3")
    res = lab.tables(bad_list)
    assert res.failed and "vips[0].backend [" in res["msg"] and "expected no such field" in res["msg"], res
    res = lab.tables(vips_of("b1", "b2"), config={"lb_mac": LB_MAC, "udp_timeout": 5})
    assert res.failed and "config.udp_timeout 5: expected no such field" in res["msg"], res
    assert "Traceback" not in res.get("_stderr", "")
    assert lab.fingerprint() == before


def test_vips_added_and_removed_keep_their_ids_and_rows_and_check_mode_predicts_a_swap(lab):
    two = vips_of("b1", "b2") + vips_of("b3", "b4", vip=VIP2)
    first = lab.tables(two)
    assert first.changed, first
    live = lab.live_vips()
    assert {live[VIP]["id"], live[VIP2]["id"]} == {0, 1}
    before = lab.fingerprint()
    grown = vips_of("b1", "b2") + vips_of("b2", "b3", "b4", vip=VIP2)
    check = lab.tables(grown, check=True, diff=True)
    assert check.changed and lab.fingerprint() == before
    assert "vip 192.0.2.20:80/tcp ring row %d: " % check["changes"]["vips_changed"][0]["ring"][1] in check["diff"]["after"]
    res = lab.tables(grown, diff=True)
    assert res["changes"] == check["changes"]
    assert lab.live_vips()[VIP] == live[VIP]  # the other VIP untouched
    only2 = vips_of("b2", "b3", "b4", vip=VIP2)
    res = lab.tables(only2)
    assert res["changes"]["vips_removed"] == [{"vip": "192.0.2.10:80/tcp", "id": live[VIP]["id"], "ring": live[VIP]["ring"]}]
    assert [r["address"] for r in res["changes"]["backends_removed"]] == [BACKENDS["b1"][0]]
    assert lab.live_vips()[VIP2]["id"] == live[VIP2]["id"] and VIP not in lab.live_vips()
    assert not lab.tables(only2).changed


def test_check_mode_on_a_host_without_the_load_balancer_predicts_and_creates_nothing(netns, pin_root, run_module):
    ns = netns("lbx")
    args = {"name": "lb", "vips": vips_of("b1", "b2"), "ring_size": RING, "pin_root": os.path.join(pin_root, "new")}
    res = run_module("lb_tables", args, netns=ns, check_mode=True, diff=True)
    assert res.changed and not res.failed, res
    assert [v["vip"] for v in res["changes"]["vips_added"]] == ["192.0.2.10:80/tcp"]
    assert not os.path.exists(args["pin_root"])
    res = run_module("lb_tables", args, netns=ns)
    assert res.failed and "load bpf/xdp_lb.c with ebpf.fleet.xdp_program name=lb first" in res["msg"], res
    assert not os.path.exists(args["pin_root"])


PLAYBOOK = """
- hosts: lab
  gather_facts: false
  tasks:
    - name: Declare the load balancer's VIPs
      ebpf.fleet.lb_tables:
        name: lb
        pin_root: "%(pin_root)s"
        ring_size: %(ring)d
        config:
          lb_mac: "%(mac)s"
        vips: %(vips)s
"""


@pytest.mark.playbook
def test_through_ansible_playbook_first_run_changes_second_does_not_and_no_warning(lab, tmp_path):
    (tmp_path / "inventory.ini").write_text("lab ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % lab.lbns.name)
    values = {"pin_root": lab.pin_root, "ring": RING, "mac": LB_MAC, "vips": json.dumps(vips_of("b1", "b2", "b3"))}
    (tmp_path / "play.yml").write_text(PLAYBOOK % values)

    def play(check=False):
        proc = run_playbook(str(tmp_path / "play.yml"), inventory=str(tmp_path / "inventory.ini"), check=check, diff=True)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out
        return out

    out = play(check=True)
    assert "changed=1" in out and lab.live_vips() == {}
    out = play()
    assert "changed=1" in out and "+vip 192.0.2.10:80/tcp" in out
    assert "changed=0" in play()
    assert lab.live_vips()[VIP]["id"] == 0


def test_tables_written_by_the_filter_are_taken_over_without_renumbering_a_backend(lab):
    old = maglev_entries(vips_of("b1", "b2", "b3"), ring_size=RING, config={"lb_mac": LB_MAC})
    for name, entries in old["maps"].items():
        res = lab.run_module("bpf_map", {"name": "lb", "map": name, "pin_root": lab.pin_root, "entries": entries}, netns=lab.lbns)
        assert not res.failed, res
    holder = lab.hold(list(range(24001, 24021)))
    start = lab.ping(holder)
    assert set(start.values()) == {"b1", "b2", "b3"}, start
    res = lab.tables(vips_of("b1", "b2", "b3", "b4"))
    assert res.changed and not res.failed, res
    for name in ("b1", "b2", "b3"):
        assert res["backend_ids"][BACKENDS[name][0]] == old["backend_ids"][BACKENDS[name][0]]
    assert lab.live_vips()[VIP]["ring"] != 0 and lab.live_vips()[VIP]["id"] == 0
    assert lab.ping(holder) == start


def test_tables_are_recorded_and_restored_after_a_simulated_reboot_with_connections_spread_as_before(lab):
    """lb_tables records its maps for the host's restore (the connection tables are not recorded); after
    the pins are wiped, ebpf-fleet-host restore (as its unit runs it) brings back the program and every
    table byte for byte, and new TCP connections to the VIP land on the declared backends."""
    vips = vips_of("b1", "b2", "b3")
    first = lab.tables(vips, state_dir=lab.state_dir)
    assert first.changed and sorted(first["recorded"]) == sorted(MAPS), first
    again = lab.tables(vips, state_dir=lab.state_dir)
    assert not again.changed and again["recorded"] == []  # a no-op run reads and records nothing
    assert not os.path.exists(os.path.join(lab.state_dir, "lb", "maps", "lb_conntrack.entries"))
    before = lab.fingerprint()
    holder = lab.hold(list(range(24001, 24031)))
    answers = lab.ping(holder)
    for entry in os.listdir(lab.pin_root):  # what a reboot wipes
        subprocess.run(["rm", "-rf", os.path.join(lab.pin_root, entry)], check=True)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "EBPF_FLEET_LIB": paths.COLLECTIONS,
        "EBPF_FLEET_PYTHON": "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else paths.PYTHON,
        "EBPF_FLEET_STATE_DIR": lab.state_dir,
    }
    restore = subprocess.run(
        ["nsenter", "--net=%s" % lab.lbns.path, os.path.join(paths.REPO, "extras", "host", "ebpf-fleet-host"), "restore"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert restore.returncode == 0 and restore.stdout.startswith("lb: restored"), restore.stdout + restore.stderr
    assert lab.fingerprint() == before
    # the connection table starts empty, but the rings are the same: established connections keep their
    # backend, and new ones spread over the declared backends
    assert lab.ping(holder) == answers
    assert set(lab.ping(lab.hold(list(range(24101, 24131)))).values()) == {"b1", "b2", "b3"}
    assert not lab.tables(vips, state_dir=lab.state_dir).changed
