"""Role ebpf.fleet.tc_egress through ansible-playbook on lab hosts (network namespaces): egress classes on a veth
with real traffic (a DSCP seen on the wire, a drop, the class counters), re-run changed=0, check mode changing
nothing on a fresh and on a deployed host, absent leaving no pin or record, the argument spec's message for a
wrong type, bad values refused before any change; and the XDP -> TC mark handoff end to end: packets the XDP
filter marks on a router's inbound interface leave by the other interface in the class of their mark, with
native and with generic XDP. No warning anywhere."""

import os
import re
import socket
import subprocess

import pytest
from dataplane_lab import drain, entered, packet_socket, udp_socket
from harness import paths
from harness.runner import run_playbook
from packets import IP, UDP
from scapy.layers.l2 import Ether

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_codec

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", re.M)
EF, AF11 = 46, 10

PLAYBOOK = """
- name: Egress classes
  hosts: lab
  gather_facts: false
  roles:
    - role: ebpf.fleet.tc_egress
"""

CLASSES = [
    {"name": "best_effort"},
    {"name": "voice", "dscp": "ef", "priority": 6},
    {"name": "blocked", "action": "drop"},
    {"name": "bulk", "dscp": "af11", "limit": "drop", "rate_bps": 125000000, "burst_bytes": 150000},
]
RULES = [
    {"cidr": "192.0.2.3/32", "class": "blocked"},
    {"proto": "udp", "port": 5001, "class": "voice"},
    {"mark": "0x10", "class": "bulk"},
]
POLICY = {"tc_egress_interfaces": ["va"], "tc_egress_classes": CLASSES, "tc_egress_rules": RULES, "tc_egress_default_class": "best_effort"}


def _no_warning(proc):
    out = proc.stdout + proc.stderr
    assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out


class Lab:
    """One lab host (a namespace) running the role, with its own pin root and records folder."""

    def __init__(self, ns, pin_root, state_dir, tmp_path, playbook=PLAYBOOK):
        self.ns, self.pin_root, self.state_dir, self.tmp = ns, pin_root, state_dir, tmp_path
        (tmp_path / "inventory.ini").write_text(
            "[lab]\nlabhost ansible_connection=ebpf.fleet.netns ansible_netns=%s ebpf_fleet_pin_root=%s "
            "ebpf_fleet_state_dir=%s\n" % (ns.name, pin_root, state_dir)
        )
        (tmp_path / "play.yml").write_text(playbook)

    def play(self, check=False, **variables):
        proc = run_playbook(str(self.tmp / "play.yml"), inventory=str(self.tmp / "inventory.ini"), extra_vars=variables, check=check, diff=check)
        _no_warning(proc)
        return proc

    @staticmethod
    def changed(proc) -> int:
        return int(dict(RECAP.findall(proc.stdout))["labhost"])

    def sh(self, *argv) -> str:
        return subprocess.run(["nsenter", "--net=/run/netns/%s" % self.ns.name] + list(argv), capture_output=True, text=True, check=True).stdout

    def left(self) -> dict:
        """What the collection holds for this host: pins (files on bpffs, the hooks' links among them) and
        records (files), by path; empty folders are not counted."""
        return {
            kind: sorted(os.path.relpath(os.path.join(top, name), root) for top, _dirs, files in os.walk(root) for name in files)
            for kind, root in (("pins", self.pin_root), ("records", self.state_dir))
        }

    def counters(self, deployment: str, map_name: str) -> dict:
        fd = libbpf.obj_get(os.path.join(self.pin_root, deployment, "maps", map_name))
        try:
            return {tuple(e["key"].values()) if isinstance(e["key"], dict) else e["key"]: e["value"]["packets"] for e in map_codec.read_entries(fd)}
        finally:
            os.close(fd)


EMPTY = {"pins": [], "records": []}


@pytest.fixture
def lab(netns, pin_root, state_dir, tmp_path):
    ns_a, ns_b = netns("tea"), netns("teb")
    ns_a.veth("va", "vb", peer_ns=ns_b, addr_a="192.0.2.1/24", addr_b="192.0.2.2/24")
    ns_b.ip("addr", "add", "192.0.2.3/24", "dev", "vb")
    lab = Lab(ns_a, pin_root, state_dir, tmp_path)
    lab.peer = ns_b
    return lab


def _send(lab):
    """10 UDP datagrams to the voice port, 10 to another port, 10 to the blocked address; what vb saw."""
    sniffer = packet_socket(lab.peer, "vb")
    rx_ef, rx_be = udp_socket(lab.peer, "192.0.2.2", 5001), udp_socket(lab.peer, "192.0.2.2", 5002)
    rx_blocked = udp_socket(lab.peer, "192.0.2.3", 5001)
    try:
        with entered(lab.ns):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for i in range(10):
                tx.sendto(b"ef%d" % i, ("192.0.2.2", 5001))
                tx.sendto(b"be%d" % i, ("192.0.2.2", 5002))
                tx.sendto(b"blocked%d" % i, ("192.0.2.3", 5001))
            tx.close()
        got = {"ef": drain(rx_ef), "be": drain(rx_be), "blocked": drain(rx_blocked)}
        frames = [Ether(f) for f in drain(sniffer)]
    finally:
        for sock in (rx_ef, rx_be, rx_blocked, sniffer):
            sock.close()
    return got, [f for f in frames if IP in f and UDP in f]


def test_present_marks_and_drops_traffic_rerun_unchanged_check_mode_changes_nothing_absent_leaves_nothing(lab):
    check = lab.play(check=True, **POLICY)
    assert check.returncode == 0, check.stdout
    assert lab.changed(check) > 0  # predicted
    assert lab.left() == EMPTY

    first = lab.play(**POLICY)
    assert first.returncode == 0, first.stdout
    assert lab.changed(first) > 0
    deployed = lab.left()
    folders = {pin.split("/")[0] for pin in deployed["pins"]}
    assert "egress" in folders and folders <= {"egress", "_hooks"}, deployed
    assert "_hooks/tc_egress@va/link" in deployed["pins"], deployed
    assert {record.split("/")[0] for record in deployed["records"]} <= {"egress", ".hooks"}, deployed

    got, udp = _send(lab)
    assert len(got["ef"]) == 10 and len(got["be"]) == 10 and got["blocked"] == []
    ef = [f for f in udp if f[IP].dst == "192.0.2.2" and f[UDP].dport == 5001]
    be = [f for f in udp if f[IP].dst == "192.0.2.2" and f[UDP].dport == 5002]
    assert len(ef) == 10 and all(f[IP].tos == EF << 2 for f in ef), [f[IP].tos for f in ef]
    assert len(be) == 10 and all(f[IP].tos == 0 for f in be)
    assert not [f for f in udp if f[IP].dst == "192.0.2.3"]
    counts = lab.counters("egress", "egress_stats")
    assert counts[(1, "pass")] == 10 and counts[(2, "drop")] == 10 and counts[(0, "pass")] >= 10

    second = lab.play(**POLICY)
    assert second.returncode == 0 and lab.changed(second) == 0, second.stdout
    check = lab.play(check=True, **POLICY)
    assert check.returncode == 0 and lab.changed(check) == 0, check.stdout

    # a changed declaration: the blocked rule gone (sync removes it), the voice class re-marked
    fewer = dict(POLICY, tc_egress_rules=RULES[1:], tc_egress_classes=[dict(CLASSES[1], dscp="af11") if c["name"] == "voice" else c for c in CLASSES])
    changed = lab.play(**fewer)
    assert changed.returncode == 0 and lab.changed(changed) > 0, changed.stdout
    got, udp = _send(lab)
    assert len(got["blocked"]) == 10
    assert all(f[IP].tos == AF11 << 2 for f in udp if f[UDP].dport == 5001)

    check = lab.play(check=True, tc_egress_state="absent")
    assert check.returncode == 0 and lab.changed(check) > 0, check.stdout
    assert lab.left() == deployed
    gone = lab.play(tc_egress_state="absent")
    assert gone.returncode == 0 and lab.changed(gone) > 0, gone.stdout
    assert lab.left() == EMPTY
    got, udp = _send(lab)  # nothing classifies any more: every packet passes as sent
    assert len(got["blocked"]) == 10 and all(f[IP].tos == 0 for f in udp)
    again = lab.play(tc_egress_state="absent")
    assert again.returncode == 0 and lab.changed(again) == 0, again.stdout


@pytest.mark.parametrize(
    "variables, message",
    [
        (dict(POLICY, tc_egress_interfaces={"va": 1}), "argument 'tc_egress_interfaces' is of type dict"),
        (dict(POLICY, tc_egress_classes={"name": "voice"}), "argument 'tc_egress_classes' is of type dict"),
        (dict(POLICY, tc_egress_priority="first"), "argument 'tc_egress_priority' is of type str"),
        (dict(POLICY, tc_egress_state="gone"), "value of tc_egress_state must be one of: present, absent, got: gone"),
    ],
)
def test_wrong_variable_types_fail_with_the_argument_spec_message(lab, variables, message):
    proc = lab.play(**variables)
    assert proc.returncode != 0
    assert "Validation of arguments failed" in proc.stdout and message in proc.stdout, proc.stdout
    assert lab.left() == EMPTY


@pytest.mark.parametrize(
    "variables, message",
    [
        (dict(POLICY, tc_egress_interfaces=[]), "tc_egress_interfaces []: expected at least one interface"),
        (dict(POLICY, tc_egress_interfaces=["va", "nope0"]), "tc_egress_interfaces[1] \"nope0\": expected an interface of labhost (it has lo, va)"),
        (dict(POLICY, tc_egress_ingress_interfaces=["va", "in0"]), "tc_egress_ingress_interfaces[1] \"in0\": expected an interface of labhost"),
        (dict(POLICY, tc_egress_classes=CLASSES + [{"name": "x", "dscp": "af51"}]), "classes[4].dscp 'af51': expected an integer 0..63 or a name"),
        (
            dict(POLICY, tc_egress_rules=RULES + [{"cidr": "198.51.100.1/24", "class": "voice"}]),
            "rules[3].cidr '198.51.100.1/24': expected the network address, 198.51.100.0/24",
        ),
        (dict(POLICY, tc_egress_rules=[{"mark": 16, "class": "Voice"}]), "(did you mean voice?)"),
        (dict(POLICY, tc_egress_default_class="nobody"), "default_class 'nobody': expected the name of a declared class"),
        (dict(POLICY, tc_egress_mark_name="egress"), "tc_egress_mark_name \"egress\": expected a name other than"),
    ],
)
def test_bad_values_fail_naming_variable_value_and_expected_before_any_change(lab, variables, message):
    proc = lab.play(**variables)
    assert proc.returncode != 0 and message in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert lab.left() == EMPTY


# ---------------------------------------------------------------- the XDP -> TC mark handoff, end to end

ROUTED = """
- name: The XDP filter on the router's inbound interface, with marks on two rules
  hosts: lab
  gather_facts: false
  module_defaults:
    group/ebpf.fleet.ebpf:
      pin_root: "{{ ebpf_fleet_pin_root }}"
      state_dir: "{{ ebpf_fleet_state_dir }}"
  tasks:
    - name: Load xdp_filter on ri
      ebpf.fleet.xdp_program:
        name: filter
        src: "{{ filter_src }}"
        mode: "{{ xdp_mode }}"
        priority: 10
        interfaces: [ri]

    - name: Source rules (192.0.2.1 passes with mark 0x10)
      ebpf.fleet.bpf_map:
        name: filter
        map: filter_v4
        mode: sync
        entries: "{{ filter_v4_rules | ebpf.fleet.xdp_filter_v4_entries }}"

    - name: Port rules (UDP 6000 passes with mark 0x20)
      ebpf.fleet.bpf_map:
        name: filter
        map: filter_ports
        mode: sync
        entries: "{{ filter_port_rules | ebpf.fleet.xdp_filter_port_entries }}"

- name: Egress classes on the router's outbound interface, the mark hook on its inbound one
  hosts: lab
  gather_facts: false
  roles:
    - role: ebpf.fleet.tc_egress
"""

MARKED = {
    "filter_src": os.path.join(paths.REPO, "bpf", "xdp_filter.c"),
    "filter_v4_rules": [{"cidr": "192.0.2.1/32", "action": "pass", "rule_id": 1, "mark": "0x10"}],
    "filter_port_rules": [{"proto": "udp", "port": 6000, "action": "pass", "rule_id": 2, "mark": 32}],
    "tc_egress_interfaces": ["ro"],
    "tc_egress_ingress_interfaces": ["ri"],
    "tc_egress_classes": [{"name": "voice", "dscp": "ef"}, {"name": "blocked", "action": "drop"}],
    "tc_egress_rules": [{"mark": "0x10", "class": "voice"}, {"mark": "0x20", "class": "blocked"}],
}


@pytest.mark.parametrize("xdp_mode", ["native", "generic"])
def test_a_mark_set_by_the_xdp_filter_on_ingress_classifies_routed_packets_on_egress(netns, pin_root, state_dir, tmp_path, xdp_mode):
    """client (192.0.2.1 and .2) -> ri [router: xdp_filter + tc_ingress_mark] ro -> server (198.51.100.1).
    From .1 (source rule, mark 0x10): voice, EF on the wire. From .2 to UDP 6000 (port rule, mark 0x20):
    blocked, dropped by egress. From .2 to another port: no rule, no mark, default class, DSCP untouched."""
    client, router, server = netns("tmc"), netns("tmr"), netns("tms")
    client.veth("c0", "ri", peer_ns=router, addr_a="192.0.2.1/24", addr_b="192.0.2.254/24")
    client.ip("addr", "add", "192.0.2.2/24", "dev", "c0")
    router.veth("ro", "s0", peer_ns=server, addr_a="198.51.100.254/24", addr_b="198.51.100.1/24")
    client.ip("route", "add", "198.51.100.0/24", "via", "192.0.2.254")
    server.ip("route", "add", "192.0.2.0/24", "via", "198.51.100.254")
    router.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    for ns, dev, peer in ((client, "c0", "192.0.2.254"), (server, "s0", "198.51.100.254")):
        ns.run(["ping", "-c", "1", "-W", "2", "-I", dev, peer], check=False)  # neighbours resolved before counting
    lab = Lab(router, pin_root, state_dir, tmp_path, playbook=ROUTED)
    variables = dict(MARKED, xdp_mode=xdp_mode)

    first = lab.play(**variables)
    assert first.returncode == 0, first.stdout
    assert lab.play(**variables).returncode == 0

    sniffer = packet_socket(server, "s0")
    rx = {port: udp_socket(server, "198.51.100.1", port) for port in (5001, 5002, 6000)}
    try:
        with entered(client):
            for source, port in (("192.0.2.1", 5001), ("192.0.2.2", 5002), ("192.0.2.2", 6000)):
                tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                tx.bind((source, 0))
                for i in range(10):
                    tx.sendto(b"%s-%d" % (source.encode(), i), ("198.51.100.1", port))
                tx.close()
        got = {port: drain(sock) for port, sock in rx.items()}
        frames = [Ether(f) for f in drain(sniffer)]
    finally:
        for sock in list(rx.values()) + [sniffer]:
            sock.close()

    udp = [f for f in frames if IP in f and UDP in f]
    assert len(got[5001]) == 10 and len(got[5002]) == 10 and got[6000] == []
    voice = [f for f in udp if f[IP].src == "192.0.2.1"]
    plain = [f for f in udp if f[IP].src == "192.0.2.2" and f[UDP].dport == 5002]
    assert len(voice) == 10 and all(f[IP].tos == EF << 2 for f in voice), [f[IP].tos for f in voice]
    assert len(plain) == 10 and all(f[IP].tos == 0 for f in plain)
    assert not [f for f in udp if f[UDP].dport == 6000]
    # voice is class 1, blocked 2 (the order written; the added default class is 0)
    egress = lab.counters("egress", "egress_stats")
    assert egress[(1, "pass")] == 10 and egress[(2, "drop")] == 10 and egress[(0, "pass")] >= 10, egress
    marks = lab.counters("egress_mark", "tc_mark_stats")
    assert marks[("set",)] == 20 and marks[("none",)] >= 10, marks
    rules = lab.counters("filter", "filter_rule_stats")
    assert rules[1] == 10 and rules[2] == 10

    # without the mark hook the marks stop at XDP: nothing is classified by mark any more
    variables["tc_egress_ingress_interfaces"] = []
    unhooked = lab.play(**variables)
    assert unhooked.returncode == 0 and lab.changed(unhooked) > 0, unhooked.stdout
    assert not [pin for pin in lab.left()["pins"] if pin.startswith("egress_mark/")]
    rx6000 = udp_socket(server, "198.51.100.1", 6000)
    try:
        with entered(client):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.bind(("192.0.2.2", 0))
            for i in range(10):
                tx.sendto(b"unmarked-%d" % i, ("198.51.100.1", 6000))
            tx.close()
        assert len(drain(rx6000)) == 10
    finally:
        rx6000.close()
