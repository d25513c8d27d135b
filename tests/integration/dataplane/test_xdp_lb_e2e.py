"""xdp_lb end to end: real TCP connections from a client namespace through the LB (native XDP on veth)
to backend namespaces, by L2 DSR and by IPIP; each lands on the backend Maglev chose.

    client --+
             |  (bridge in a switch namespace)
    lb ------+   xdp_lb on the LB's veth, XDP_TX back to the bridge
    b1..b3 --+   VIP on lo; for IPIP an XDP fixture (tests/bpf/lb_decap.c) decapsulates, as the
                 kernel has no ipip device; replies go straight to the client
"""

import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import bpfbuild, paths  # noqa: E402
from lb_helpers import LB  # noqa: E402

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf  # noqa: E402

pytestmark = pytest.mark.kernel

VIP = "192.0.2.10"
CLIENT = "198.51.100.100"
LB_IP = "198.51.100.1"
BACKENDS = {"b1": ("198.51.100.11", "02:00:00:50:00:11"), "b2": ("198.51.100.12", "02:00:00:50:00:12"), "b3": ("198.51.100.13", "02:00:00:50:00:13")}
LB_MAC = "02:00:00:50:00:01"

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(sys.argv[1].encode()); c.close()
"""

CLIENT_SCRIPT = """
import json, socket, sys
out = {}
for sport in json.loads(sys.argv[2]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.settimeout(3)
    s.bind((sys.argv[3], sport))
    try:
        s.connect((sys.argv[1], 80)); out[sport] = s.recv(64).decode()
    except OSError as exc:
        out[sport] = "error: %s" % exc
    s.close()
print(json.dumps(out))
"""


def sysctl(ns, *pairs):
    for pair in pairs:
        ns.run(["sysctl", "-q", "-w", pair])


@pytest.fixture
def lab(netns, pin_root):
    servers, lbs = [], []
    sw = netns("sw")
    sw.bridge("br0")
    client = netns("cl")
    lbns = netns("lb")

    def plug(ns, ifname, mac, addr, port):
        return sw.plug_lb_host(ns, ifname, mac, addr, port, paths.bpf_object("lb_floor_pass"))

    plug(client, "c0", "02:00:00:50:00:64", CLIENT, "pcl")
    # frames leave the client with a partial (offloaded) TCP checksum, which XDP_TX does not finish
    client.run(["ethtool", "-K", "c0", "tx", "off"])
    plug(lbns, "l0", LB_MAC, LB_IP, "plb")
    client.ip("route", "add", VIP + "/32", "via", LB_IP)
    backends = {}
    for name, (addr, mac) in BACKENDS.items():
        ns = netns(name)
        plug(ns, "e0", mac, addr, "p" + name)
        ns.ip("addr", "add", VIP + "/32", "dev", "lo")
        sysctl(
            ns,
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.conf.e0.rp_filter=0",
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
        )
        # IPIP: this kernel has no ipip device (CONFIG_NET_IPIP off): an XDP fixture decapsulates
        ns.run(["ip", "link", "set", "dev", "e0", "xdpdrv", "obj", paths.bpf_object("lb_decap"), "sec", "xdp"])
        proc = subprocess.Popen(["nsenter", "--net=%s" % ns.path, sys.executable, "-c", SERVER, name], stdout=subprocess.PIPE, text=True)
        servers.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        backends[name] = ns

    def start_lb(mode):
        vips = [
            {
                "vip": VIP,
                "port": 80,
                "proto": "tcp",
                "mode": mode,
                "backends": [{"address": addr, "mac": mac, "name": name} for name, (addr, mac) in BACKENDS.items()],
            }
        ]
        lb = LB(vips, ring_size=1009, rows=1, lb_mac=LB_MAC)
        lbs.append(lb)
        pin = os.path.join(pin_root, "xdp_lb_%s" % mode)
        libbpf.obj_pin(lb.prog.prog_fd, pin)
        lbns.run(["ip", "link", "set", "dev", "l0", "xdpdrv", "pinned", pin])  # nsenter: bpffs stays visible
        return lb

    def connect(sports):
        res = client.run([sys.executable, "-c", CLIENT_SCRIPT, VIP, json.dumps(sports), CLIENT], timeout=60)
        return {int(k): v for k, v in json.loads(res.stdout).items()}

    try:
        yield {"start_lb": start_lb, "connect": connect, "lbns": lbns, "backends": backends}
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        for lb in lbs:
            lb.close()


@pytest.mark.parametrize("mode", ["dsr", "ipip"])
def test_real_tcp_connections_through_the_lb_land_on_the_maglev_backend(lab, mode):
    lb = lab["start_lb"](mode)
    sports = list(range(20001, 20031))
    time.sleep(0.2)
    got = lab["connect"](sports)
    names = {lb.backend_id(name): name for name in BACKENDS}
    want = {s: names[lb.maglev_backend(CLIENT, VIP, s, 80, "tcp")] for s in sports}
    assert got == want
    assert len(set(got.values())) == 3  # spread over every backend
    stats = lb.stats()
    assert stats["tx"][0] >= 3 * len(sports)  # SYN, ACK, FIN... of every connection went through XDP_TX
    assert stats["syn"][0] >= len(sports)


CONNTRACK = ("lb_conntrack_v4", "lb_conntrack_v6")


def lb_object(tmp_path, name, *flags, **defines):
    """bpf/xdp_lb.c compiled with the clang arguments of xdp_program's `defines` option (plus `flags`)."""
    out = str(tmp_path / name)
    proc = bpfbuild.compile_like_xdp_program(os.path.join(paths.BPF_SRC, "xdp_lb.c"), out, *flags, **defines)
    assert proc.returncode == 0, proc.stderr
    return out


def test_xdp_program_sizes_the_connection_tables_per_cpu_and_an_upgrade_reuses_them(netns, pin_root, state_dir, run_module, tmp_path):
    ns = netns("lbd")
    ns.veth("va", "vb")
    per_cpu = 64
    v1 = lb_object(tmp_path, "v1.o", FLEET_LB_CONNTRACK_PER_CPU=per_cpu)
    v2 = lb_object(tmp_path, "v2.o", "-mcpu=v2", FLEET_LB_CONNTRACK_PER_CPU=per_cpu)  # other code, same maps
    assert open(v1, "rb").read() != open(v2, "rb").read()
    args = dict(name="lb", object=v1, interfaces=["vb"], pin_root=pin_root, state_dir=state_dir)

    def tables():
        out = {}
        for name in CONNTRACK:
            fd = libbpf.obj_get(os.path.join(pin_root, "lb", "maps", name))
            with libbpf.fd_closing(fd):
                out[name] = libbpf.map_info(fd)
        return out

    res = run_module("xdp_program", args, netns=ns)
    assert res.changed and not res.failed, res
    first = tables()
    for info in first.values():
        assert info["type"] == "lru_hash" and info["max_entries"] == per_cpu * libbpf.num_possible_cpus(), info
    again = run_module("xdp_program", args, netns=ns)
    assert not again.failed and not again.changed, again
    upgraded = run_module("xdp_program", dict(args, object=v2), netns=ns)
    assert upgraded.changed and not upgraded.failed, upgraded
    assert set(CONNTRACK) <= set(upgraded["maps"]["reused"]) and not upgraded["maps"]["incompatible"], upgraded
    assert {name: info["id"] for name, info in tables().items()} == {name: info["id"] for name, info in first.items()}
