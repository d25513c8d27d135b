"""tc_egress deployed by ansible-playbook on a lab host (a network namespace): tc_program loads bpf/tc_egress.c on
a veth, bpf_map writes every map the tc_egress_entries filter turns the operator's classes and rules into, a
second run changes nothing, and real packets leaving the veth are marked and dropped as declared."""

import os
import socket

import pytest
from dataplane_lab import drain, entered, packet_socket, udp_socket
from harness import paths
from harness.runner import run_playbook
from packets import IP, UDP
from scapy.layers.l2 import Ether

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_codec

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

POLICY = {
    "default_class": "best_effort",
    "classes": [
        {"name": "best_effort"},
        {"name": "voice", "dscp": "ef", "priority": 6},
        {"name": "blocked", "action": "drop"},
        {"name": "bulk", "dscp": "af11", "limit": "drop", "rate_bps": 125000000, "burst_bytes": 150000},
        {"name": "backup", "limit": "pace", "rate_bps": 12500000},
    ],
    "rules": [
        {"cidr": "192.0.2.3/32", "class": "blocked"},
        {"cidr": "198.51.100.0/24", "proto": "udp", "port": 5060, "class": "voice"},
        {"cidr": "2001:db8:dead::/48", "class": "blocked"},
        {"proto": "udp", "port": 5001, "class": "voice"},
        {"proto": "tcp", "port": 873, "class": "backup"},
        {"mark": "0x10", "class": "bulk"},
        {"mark": 65536, "class": "backup"},
    ],
}

PLAYBOOK = """
- name: Egress classes on a lab host
  hosts: lab
  gather_facts: false
  module_defaults:
    group/ebpf.fleet.ebpf:
      pin_root: "{{ pin_root }}"
      state_dir: "{{ state_dir }}"
  tasks:
    - name: Load tc_egress on the veth's egress
      ebpf.fleet.tc_program:
        name: egress
        src: "{{ egress_src }}"
        direction: egress
        interfaces: [va]

    - name: Declare every map of tc_egress
      ebpf.fleet.bpf_map:
        name: egress
        map: "{{ item.key }}"
        mode: sync
        entries: "{{ item.value }}"
      loop: "{{ (egress_policy | ebpf.fleet.tc_egress_entries).maps | dict2items }}"
      loop_control:
        label: "{{ item.key }}"
"""


def _no_warning(proc):
    out = proc.stdout + proc.stderr
    assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out


def _changed(proc) -> int:
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("labhost") and "changed=" in ln][-1]
    return int(line.split("changed=")[1].split()[0])


def test_playbook_deploys_egress_classes_idempotently_and_real_packets_are_marked_and_dropped(netns, pin_root, state_dir, tmp_path):
    ns_a, ns_b = netns("epa"), netns("epb")
    ns_a.veth("va", "vb", peer_ns=ns_b, addr_a="192.0.2.1/24", addr_b="192.0.2.2/24")
    ns_b.ip("addr", "add", "192.0.2.3/24", "dev", "vb")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[lab]\nlabhost ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % ns_a.name)
    playbook = tmp_path / "egress.yml"
    playbook.write_text(PLAYBOOK)
    extra = {"pin_root": pin_root, "state_dir": state_dir, "egress_policy": POLICY, "egress_src": os.path.join(paths.REPO, "bpf", "tc_egress.c")}

    first = run_playbook(str(playbook), inventory=str(inventory), extra_vars=extra)
    assert first.returncode == 0, first.stdout + first.stderr
    _no_warning(first)
    assert _changed(first) == 2  # the program, and the maps' task
    written = {ln.split("(item=")[1].rstrip(")") for ln in first.stdout.splitlines() if ln.startswith("changed:") and "(item=" in ln}
    # egress_config {default_class: 0} is all zero, what the new array already holds: declared, not changed
    assert written == {
        "egress_classes",
        "egress_mark_classes",
        "egress_marks",
        "egress_dst_v4_16",
        "egress_dst_v4_24",
        "egress_dst_v4_32",
        "egress_dst_v6",
        "egress_ports",
    }, first.stdout
    second = run_playbook(str(playbook), inventory=str(inventory), extra_vars=extra)
    assert second.returncode == 0, second.stdout + second.stderr
    _no_warning(second)
    assert _changed(second) == 0, second.stdout

    sniffer = packet_socket(ns_b, "vb")
    rx_ef, rx_be = udp_socket(ns_b, "192.0.2.2", 5001), udp_socket(ns_b, "192.0.2.2", 5002)
    rx_blocked = udp_socket(ns_b, "192.0.2.3", 5001)
    try:
        with entered(ns_a):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x01)  # ECT(1): kept by the DSCP rewrite
            for i in range(10):
                tx.sendto(b"ef%d" % i, ("192.0.2.2", 5001))
                tx.sendto(b"be%d" % i, ("192.0.2.2", 5002))
                tx.sendto(b"blocked%d" % i, ("192.0.2.3", 5001))
            tx.close()
        got_ef, got_be, got_blocked = drain(rx_ef), drain(rx_be), drain(rx_blocked)
        frames = [Ether(f) for f in drain(sniffer)]
    finally:
        for sock in (rx_ef, rx_be, rx_blocked, sniffer):
            sock.close()

    assert len(got_ef) == 10 and len(got_be) == 10 and got_blocked == []
    udp = [f for f in frames if IP in f and UDP in f]
    ef = [f for f in udp if f[IP].dst == "192.0.2.2" and f[UDP].dport == 5001]
    be = [f for f in udp if f[IP].dst == "192.0.2.2" and f[UDP].dport == 5002]
    assert len(ef) == 10 and all(f[IP].tos == (46 << 2) | 1 for f in ef), [f[IP].tos for f in ef]
    assert len(be) == 10 and all(f[IP].tos == 1 for f in be)
    assert not [f for f in udp if f[IP].dst == "192.0.2.3"]

    # the counters, decoded from the pinned egress_stats as {class_id, outcome}
    fd = libbpf.obj_get(os.path.join(pin_root, "egress", "maps", "egress_stats"))
    try:
        counts = {(e["key"]["class_id"], e["key"]["outcome"]): e["value"]["packets"] for e in map_codec.read_entries(fd)}
    finally:
        os.close(fd)
    assert counts[(1, "pass")] == 10 and counts[(2, "drop")] == 10
