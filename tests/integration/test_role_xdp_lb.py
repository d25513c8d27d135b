"""Role ebpf.fleet.xdp_lb through ansible-playbook on lab hosts (network namespaces); the backends hold the VIP on
lo with the ARP sysctls of ebpf.fleet.lb_backend's DSR mode:

    client --+
             |  (bridge in a switch namespace)
    lb1 -----+   xdp_lb loaded by the role on the LB's veth, DSR, XDP_TX back to the bridge
    backend1 +   named by inventory host: address and MAC from its host variables
    backend2 +   named by inventory host: address from its facts (gathered by the role), MAC from a host variable

Real TCP connections from the client land where the Maglev ring predicts; re-run changed=0; check mode on a fresh
and on a deployed lab changes nothing; a drained backend keeps its established connection and gets no new one;
absent leaves no pin and no record; wrong types, malformed VIPs and unknown hosts fail before any change; no
warning anywhere.
"""

import json
import os
import re
import subprocess
import sys

import pytest
from harness import paths
from harness.runner import run_playbook

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import maglev
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import read_entries

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

VIP = "192.0.2.10"
CLIENT = "198.51.100.100"
CLIENT_MAC = "02:00:00:52:00:64"
LB_IP, LB_MAC = "198.51.100.1", "02:00:00:52:00:01"
BACKENDS = {"backend1": ("198.51.100.11", "02:00:00:52:00:11"), "backend2": ("198.51.100.12", "02:00:00:52:00:12")}
NAME_OF = {addr: name for name, (addr, _mac) in BACKENDS.items()}
RING = 65537
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", re.M)

PLAYBOOK = """
- name: Load balancer
  hosts: xdp_lb
  gather_facts: false
  roles:
    - role: ebpf.fleet.xdp_lb
"""

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

# holds connections open from the given source ports; on every line of stdin sends one line on each and prints
# who answered
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


def predict(sports, weights):
    """sport -> backend name, from the Maglev ring of the declared weights (as lb_tables builds it: each backend
    known by its address) and the data plane's flow hash."""
    listed = [(BACKENDS[name][0], weight) for name, weight in sorted(weights.items())]
    table = maglev.build_table(listed, RING)
    return {sport: NAME_OF[listed[table[maglev.slot_of(maglev.flow_hash(CLIENT, VIP, sport, 80, 6), RING)]][0]] for sport in sports}


class Lab:
    def __init__(self, netns, tmp_path, pin_root, state_dir):
        self.tmp, self.pin_root, self.state_dir = tmp_path, pin_root, state_dir
        self.procs = []
        self.sw = netns("xsw")
        self.sw.bridge("br0")
        self.client = netns("xcl")
        self.lbns = netns("xlb")
        self.plug(self.client, "c0", CLIENT_MAC, CLIENT, "pcl")
        self.client.run(["ethtool", "-K", "c0", "tx", "off"])  # XDP_TX does not finish a partial checksum
        self.client.ip("route", "add", VIP + "/32", "via", LB_IP)
        self.plug(self.lbns, "l0", LB_MAC, LB_IP, "plb")
        self.backends = {}
        for name, (addr, mac) in BACKENDS.items():
            ns = netns("x" + name[-1])
            self.plug(ns, "e0", mac, addr, "p" + name[-1])
            self.backends[name] = ns
            # what ebpf.fleet.lb_backend sets for DSR (tests/integration/test_role_lb_backend.py), set here to keep
            # each playbook run short on this shared machine
            ns.ip("addr", "add", VIP + "/32", "dev", "lo")
            for pair in ("net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"):
                ns.run(["sysctl", "-q", "-w", pair])
            proc = subprocess.Popen(["nsenter", "--net=%s" % ns.path, sys.executable, "-c", SERVER, name], stdout=subprocess.PIPE, text=True)
            self.procs.append(proc)
            assert proc.stdout.readline().strip() == "ready"
        # backend2's address comes from its facts, gathered by the role (default_ipv4 needs a default route); its
        # MAC from a host variable: under `nsenter --net` /sys is the controller's, so the facts of a namespace lab
        # host carry no MAC of its own interfaces (they do on a real host)
        self.backends["backend2"].ip("route", "add", "default", "via", LB_IP)
        # backend3: in the inventory, no host variables and no default route, so no address to find
        self.orphan = netns("x3")
        # ansible_host names the namespace too: a task delegated to a host (the role's fact gathering) reaches it
        # through ansible_host, as Ansible does not pass a delegated host's ansible_netns to the connection
        host = "ansible_connection=ebpf.fleet.netns ansible_host=%s"
        (tmp_path / "inventory.ini").write_text(
            "\n".join(
                [
                    "[xdp_lb]",
                    "lb1 %s ebpf_fleet_pin_root=%s ebpf_fleet_state_dir=%s" % (host % self.lbns.name, pin_root, state_dir),
                    "[lb_backend]",
                    "backend1 %s xdp_lb_backend_address=%s xdp_lb_backend_mac=%s" % (host % self.backends["backend1"].name, *BACKENDS["backend1"]),
                    "backend2 %s xdp_lb_backend_mac=%s" % (host % self.backends["backend2"].name, BACKENDS["backend2"][1]),
                    "[others]",
                    "backend3 %s" % (host % self.orphan.name),
                    "",
                ]
            )
        )
        (tmp_path / "play.yml").write_text(PLAYBOOK)

    def plug(self, ns, ifname, mac, addr, port):
        self.sw.plug_lb_host(ns, ifname, mac, addr, port, paths.bpf_object("lb_floor_pass"))

    def play(self, vips=None, check=False, **variables):
        extra = {"xdp_lb_interfaces": ["l0"]}
        if vips is not None:
            extra["xdp_lb_vips"] = vips
        extra.update(variables)
        proc = run_playbook(str(self.tmp / "play.yml"), inventory=str(self.tmp / "inventory.ini"), extra_vars=extra, check=check, diff=check)
        out = proc.stdout + proc.stderr
        assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out
        return proc

    @staticmethod
    def changed(proc) -> dict:
        return {host: int(changed) for host, changed, _failed in RECAP.findall(proc.stdout)}

    def lb_state(self):
        """What the role leaves on the LB host: pins, records, the XDP program on l0."""
        pins = os.path.join(self.pin_root, "lb")
        records = os.path.join(self.state_dir, "lb")
        link = json.loads(self.lbns.ip("-j", "-d", "link", "show", "l0").stdout)[0]
        return {
            "pins": sorted(os.listdir(pins)) if os.path.exists(pins) else None,
            "records": sorted(os.listdir(records)) if os.path.exists(records) else None,
            "xdp": "xdp" in link,
        }

    def map_entries(self, name):
        fd = libbpf.obj_get(bpffs.map_pin(self.pin_root, "lb", name))
        try:
            return read_entries(fd)
        finally:
            os.close(fd)

    def hold(self, sports):
        cmd = ["nsenter", "--net=%s" % self.client.path, sys.executable, "-c", HOLDER, VIP, json.dumps(sports), CLIENT]
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
def lab(netns, tmp_path, pin_root, state_dir):
    lab = Lab(netns, tmp_path, pin_root, state_dir)
    try:
        yield lab
    finally:
        lab.close()


def vips_of(**backends):
    """One TCP VIP on port 80 (DSR) whose backends are inventory hosts: name=options ({} for defaults)."""
    return [
        {
            "address": VIP,
            "port": 80,
            "protocol": "tcp",
            "forwarding": "dsr",
            "backends": [dict({"host": name}, **options) for name, options in backends.items()],
        }
    ]


def test_backends_named_by_host_connections_spread_as_maglev_predicts_rerun_and_check_mode_change_nothing(lab):
    # plus a UDP VIP forwarded by IPIP to a backend given by address (declared only: no traffic)
    ipip = {
        "address": "192.0.2.53",
        "port": 53,
        "protocol": "udp",
        "forwarding": "ipip",
        "backends": [{"address": "198.51.100.31", "mac": "02:00:00:52:00:fe"}],
    }
    vips = vips_of(backend1={"weight": 2}, backend2={}) + [ipip]
    config = {"tunnel_src_v4": "203.0.113.0/24"}
    fresh = lab.lb_state()
    assert fresh == {"pins": None, "records": None, "xdp": False}

    check = lab.play(vips, check=True, xdp_lb_config=config)
    assert check.returncode == 0, check.stdout
    assert lab.changed(check)["lb1"] > 0  # predicted
    assert lab.lb_state() == fresh

    first = lab.play(vips, xdp_lb_config=config)
    assert first.returncode == 0, first.stdout
    assert lab.changed(first)["lb1"] > 0
    state = lab.lb_state()
    assert state["xdp"] and "maps" in state["pins"] and state["records"], state
    declared = {(e["key"]["vip"], e["key"]["port"], e["key"]["proto"]): e["value"]["mode"] for e in lab.map_entries("lb_vips_v4")}
    assert declared == {(VIP, 80, "tcp"): "dsr", ("192.0.2.53", 53, "udp"): "ipip"}
    backends = {e["value"]["addr4"]: e["value"]["mac"] for e in lab.map_entries("lb_backends") if e["value"]["family"] == "ipv4"}
    assert backends == {"198.51.100.11": "02:00:00:52:00:11", "198.51.100.12": "02:00:00:52:00:12", "198.51.100.31": "02:00:00:52:00:fe"}

    # real TCP connections: each lands on the backend the ring of weights {backend1: 2, backend2: 1} predicts
    sports = list(range(31001, 31061))
    expected = predict(sports, {"backend1": 2, "backend2": 1})
    assert set(expected.values()) == set(BACKENDS)
    answers = lab.ping(lab.hold(sports))
    assert answers == expected
    counts = {name: list(answers.values()).count(name) for name in BACKENDS}
    assert counts["backend1"] > counts["backend2"] > 0, counts

    second = lab.play(vips, xdp_lb_config=config)
    assert second.returncode == 0, second.stdout
    assert set(lab.changed(second).values()) == {0}, second.stdout
    check = lab.play(vips, check=True, xdp_lb_config=config)
    assert check.returncode == 0, check.stdout
    assert set(lab.changed(check).values()) == {0}, check.stdout
    assert lab.lb_state() == state


def test_drain_keeps_the_established_connection_and_sends_new_ones_to_the_other_backend(lab):
    assert lab.play(vips_of(backend1={}, backend2={})).returncode == 0
    sports = list(range(32001, 32041))
    holder = lab.hold(sports)
    start = lab.ping(holder)
    assert start == predict(sports, {"backend1": 1, "backend2": 1})
    on_backend2 = [sport for sport, name in start.items() if name == "backend2"]
    assert on_backend2, start

    drained = lab.play(vips_of(backend1={}, backend2={"drain": True}))
    assert drained.returncode == 0, drained.stdout
    assert lab.changed(drained)["lb1"] > 0
    assert lab.ping(holder) == start  # established connections, those on backend2 included, keep their backend
    fresh = lab.ping(lab.hold(list(range(33001, 33031))))
    assert set(fresh.values()) == {"backend1"}, fresh

    again = lab.play(vips_of(backend1={}, backend2={"weight": 0}))  # weight 0 is the same drain
    assert again.returncode == 0 and lab.changed(again)["lb1"] == 0, again.stdout
    assert lab.ping(holder) == start


def test_absent_removes_program_pins_and_records(lab):
    assert lab.play(vips_of(backend1={}, backend2={})).returncode == 0
    assert lab.lb_state()["xdp"]
    check = lab.play(check=True, xdp_lb_state="absent")
    assert check.returncode == 0 and lab.changed(check)["lb1"] > 0, check.stdout
    assert lab.lb_state()["xdp"]
    gone = lab.play(xdp_lb_state="absent")
    assert gone.returncode == 0 and lab.changed(gone)["lb1"] > 0, gone.stdout
    assert lab.lb_state() == {"pins": None, "records": None, "xdp": False}
    # no record left (the module may keep its empty .hooks folder)
    assert [os.path.join(root, name) for root, _dirs, files in os.walk(lab.state_dir) for name in files] == []
    again = lab.play(xdp_lb_state="absent")
    assert again.returncode == 0 and lab.changed(again)["lb1"] == 0, again.stdout


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"xdp_lb_ring_size": "big"}, "argument 'xdp_lb_ring_size' is of type str"),
        ({"xdp_lb_mode": "fast"}, "value of xdp_lb_mode must be one of: native, generic, offload, auto, got: fast"),
        ({"xdp_lb_config": "lb_mac"}, "argument 'xdp_lb_config' is of type str"),
    ],
)
def test_wrong_variable_types_fail_with_the_argument_spec_message(lab, variables, message):
    proc = lab.play(vips_of(backend1={}, backend2={}), **variables)
    assert proc.returncode != 0
    assert "Validation of arguments failed" in proc.stdout and message in proc.stdout, proc.stdout
    assert lab.lb_state() == {"pins": None, "records": None, "xdp": False}


@pytest.mark.parametrize(
    "vips, message",
    [
        (
            vips_of(backend1={}, backend9={}),
            'xdp_lb_vips[0] (192.0.2.10:80/tcp) backends[1] host "backend9": expected a host of the inventory; "backend9" is not one',
        ),
        (
            vips_of(backend1={}, backend3={}),
            "xdp_lb_vips[0] (192.0.2.10:80/tcp) backends[1] host backend3: backend3 has no address (no host variable "
            "xdp_lb_backend_address, no fact ansible_default_ipv4.address) and no MAC",
        ),
        (
            [{"address": VIP, "port": 80, "protocol": "sctp", "backends": [{"host": "backend1", "wieght": 2}]}],
            'xdp_lb_vips[0].protocol "sctp": expected tcp or udp; xdp_lb_vips[0] (192.0.2.10:80/sctp) backends[0].wieght 2: '
            'expected no such field; valid fields: host, address, mac, weight, drain, name',
        ),
        (
            [{"address": VIP, "port": 80, "backends": [{"address": "198.51.100.50"}]}],
            'backends[0] {"address": "198.51.100.50"}: expected a mac with the address',
        ),
        (
            [{"address": VIP, "port": 80, "backends": [{"host": "backend1", "address": "198.51.100.50"}]}],
            "expected exactly one of host (an inventory host) and address (with mac)",
        ),
        ([{"address": "192.0.2.300", "port": 80, "backends": [{"host": "backend1"}]}], "vips[0].vip '192.0.2.300': expected an IPv4 or IPv6 address"),
    ],
)
def test_bad_declarations_and_unknown_backend_hosts_fail_naming_them_before_any_change(lab, vips, message):
    proc = lab.play(vips)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout
    assert lab.changed(proc)["lb1"] == 0
    assert lab.lb_state() == {"pins": None, "records": None, "xdp": False}


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"xdp_lb_interfaces": []}, "xdp_lb_interfaces []: expected at least one interface"),
        ({"xdp_lb_gather_backend_facts": False}, "xdp_lb_vips[0] (192.0.2.10:80/tcp) backends[1] host backend2: backend2 has no address"),
        ({"xdp_lb_config": {"udp_timeout": 5}}, "config.udp_timeout 5: expected no such field"),
        ({"xdp_lb_ring_size": 1000}, "ring size 1000: expected a prime number"),
    ],
)
def test_bad_settings_fail_on_the_controller_before_the_program_is_loaded(lab, variables, message):
    proc = lab.play(vips_of(backend1={}, backend2={}), **variables)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout
    assert lab.lb_state() == {"pins": None, "records": None, "xdp": False}
