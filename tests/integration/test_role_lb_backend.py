"""Role ebpf.fleet.lb_backend through ansible-playbook on lab hosts (network namespaces): the VIP on lo with the
ARP sysctls for DSR, or the IPIP device; re-run changed=0, check mode changes nothing, absent leaves nothing
behind, a wrong variable type fails with the argument spec's message, no warning anywhere."""

import json
import os
import re
import subprocess
import sys

import pytest
from harness.runner import run_playbook

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

VIP, VIP2 = "198.51.100.10", "198.51.100.11"
SYSCTLS = ("net/ipv4/conf/all/arp_ignore", "net/ipv4/conf/all/arp_announce")
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", re.M)

PLAYBOOK = """
- name: Load-balancer backend
  hosts: backends
  gather_facts: false
  roles:
    - role: ebpf.fleet.lb_backend
"""


def _kernel_has_ipip() -> bool:
    name = "ebftipipprobe%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        probe = subprocess.run(
            ["nsenter", "--net=/run/netns/%s" % name, "ip", "link", "add", "name", "probe0", "type", "ipip", "external"], capture_output=True, check=False
        )
        return probe.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


IPIP = _kernel_has_ipip()


class Backend:
    def __init__(self, netns, tmp_path):
        self.ns = netns("lbb")
        self.tmp = tmp_path
        self.sysctl_file = str(tmp_path / "sysctl.d" / "60-lb-backend.conf")
        os.makedirs(os.path.dirname(self.sysctl_file))
        (tmp_path / "inventory.ini").write_text("[backends]\nbackend1 ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % self.ns.name)
        (tmp_path / "play.yml").write_text(PLAYBOOK)

    def play(self, check=False, **variables):
        extra = {"lb_backend_sysctl_file": self.sysctl_file}
        extra.update(variables)
        proc = run_playbook(str(self.tmp / "play.yml"), inventory=str(self.tmp / "inventory.ini"), extra_vars=extra, check=check, diff=check)
        out = proc.stdout + proc.stderr
        assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out
        return proc

    def changed(self, proc) -> int:
        return int(dict(RECAP.findall(proc.stdout))["backend1"])

    def sh(self, *argv) -> str:
        return subprocess.run(["nsenter", "--net=/run/netns/%s" % self.ns.name] + list(argv), capture_output=True, text=True, check=True).stdout

    def sysctls(self, device=None) -> dict:
        keys = list(SYSCTLS) + (["net/ipv4/conf/%s/rp_filter" % device] if device else [])
        return {key: self.sh("cat", "/proc/sys/" + key).strip() for key in keys}

    def addresses(self, dev="lo") -> list:
        links = json.loads(self.sh("ip", "-j", "addr", "show"))
        return sorted(a["local"] for link in links if link["ifname"] == dev for a in link.get("addr_info", []) if a["family"] == "inet")

    def links(self) -> dict:
        return {link["ifname"]: link for link in json.loads(self.sh("ip", "-j", "-d", "link", "show"))}


@pytest.fixture
def backend(netns, tmp_path):
    return Backend(netns, tmp_path)


def test_dsr_vip_on_lo_and_arp_sysctls_idempotent_check_mode_and_absent_restores(backend):
    before = backend.sysctls()
    assert before == {SYSCTLS[0]: "0", SYSCTLS[1]: "0"}

    check = backend.play(check=True, lb_backend_vips=[VIP, VIP2])
    assert check.returncode == 0, check.stdout
    assert backend.changed(check) > 0  # predicted
    assert backend.addresses() == ["127.0.0.1"] and backend.sysctls() == before
    assert not os.path.exists(backend.sysctl_file)

    first = backend.play(lb_backend_vips=[VIP, VIP2])
    assert first.returncode == 0, first.stdout
    assert backend.changed(first) > 0
    assert backend.addresses() == ["127.0.0.1", VIP, VIP2]
    assert backend.sysctls() == {SYSCTLS[0]: "1", SYSCTLS[1]: "2"}
    record = open(backend.sysctl_file, encoding="utf-8").read()
    assert "net.ipv4.conf.all.arp_ignore = 1\n" in record and "net.ipv4.conf.all.arp_announce = 2\n" in record
    assert "# before net.ipv4.conf.all.arp_ignore = 0\n" in record

    second = backend.play(lb_backend_vips=[VIP, VIP2])
    assert second.returncode == 0 and backend.changed(second) == 0, second.stdout
    check = backend.play(check=True, lb_backend_vips=[VIP, VIP2])
    assert check.returncode == 0 and backend.changed(check) == 0, check.stdout

    # a VIP no longer listed is removed (the record knows the role set it)
    fewer = backend.play(lb_backend_vips=[VIP])
    assert fewer.returncode == 0 and backend.changed(fewer) > 0, fewer.stdout
    assert backend.addresses() == ["127.0.0.1", VIP]

    check = backend.play(check=True, lb_backend_state="absent", lb_backend_vips=[VIP])
    assert check.returncode == 0 and backend.changed(check) > 0, check.stdout
    assert backend.addresses() == ["127.0.0.1", VIP] and os.path.exists(backend.sysctl_file)

    gone = backend.play(lb_backend_state="absent")
    assert gone.returncode == 0, gone.stdout
    assert backend.addresses() == ["127.0.0.1"]
    assert backend.sysctls() == before
    assert not os.path.exists(backend.sysctl_file)
    again = backend.play(lb_backend_state="absent")
    assert again.returncode == 0 and backend.changed(again) == 0, again.stdout


def test_absent_restores_the_values_found_before_not_the_kernel_defaults(backend):
    backend.sh("sysctl", "-q", "-w", "net.ipv4.conf.all.arp_announce=1")
    first = backend.play(lb_backend_vips=[VIP])
    assert first.returncode == 0, first.stdout
    assert backend.sysctls()[SYSCTLS[1]] == "2"
    # a second run reads the record, not the values it set itself
    assert backend.play(lb_backend_vips=[VIP], lb_backend_arp_announce=2).returncode == 0
    gone = backend.play(lb_backend_state="absent")
    assert gone.returncode == 0, gone.stdout
    assert backend.sysctls() == {SYSCTLS[0]: "0", SYSCTLS[1]: "1"}


@pytest.mark.skipif(not IPIP, reason="the kernel has no IPIP device (CONFIG_NET_IPIP); see the test below")
def test_ipip_device_with_the_vip_and_loose_rp_filter_idempotent_and_absent_removes_it(backend):
    before = backend.sysctls()
    first = backend.play(lb_backend_mode="ipip", lb_backend_vips=[VIP])
    assert first.returncode == 0, first.stdout
    links = backend.links()
    assert links["fleet_ipip"]["linkinfo"]["info_kind"] == "ipip" and "UP" in links["fleet_ipip"]["flags"]
    assert backend.addresses("fleet_ipip") == [VIP] and backend.addresses() == ["127.0.0.1"]
    assert backend.sysctls("fleet_ipip")["net/ipv4/conf/fleet_ipip/rp_filter"] == "2"
    second = backend.play(lb_backend_mode="ipip", lb_backend_vips=[VIP])
    assert second.returncode == 0 and backend.changed(second) == 0, second.stdout
    check = backend.play(check=True, lb_backend_mode="ipip", lb_backend_vips=[VIP])
    assert check.returncode == 0 and backend.changed(check) == 0, check.stdout
    gone = backend.play(lb_backend_state="absent")
    assert gone.returncode == 0, gone.stdout
    assert "fleet_ipip" not in backend.links() and backend.sysctls() == before
    assert not os.path.exists(backend.sysctl_file)


@pytest.mark.skipif(IPIP, reason="the kernel has an IPIP device; see the test above")
def test_ipip_mode_on_a_kernel_without_ipip_fails_naming_host_device_and_reason_and_changes_nothing(backend):
    before = backend.sysctls()
    check = backend.play(check=True, lb_backend_mode="ipip", lb_backend_vips=[VIP])
    assert check.returncode == 0 and backend.changed(check) > 0, check.stdout
    proc = backend.play(lb_backend_mode="ipip", lb_backend_vips=[VIP])
    assert proc.returncode != 0
    assert "lb_backend on backend1: cannot create the IPIP device fleet_ipip" in proc.stdout, proc.stdout
    assert "CONFIG_NET_IPIP" in proc.stdout
    assert "fleet_ipip" not in backend.links() and backend.addresses() == ["127.0.0.1"]
    assert backend.sysctls() == before and not os.path.exists(backend.sysctl_file)


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"lb_backend_arp_ignore": "many", "lb_backend_vips": [VIP]}, "argument 'lb_backend_arp_ignore' is of type str"),
        ({"lb_backend_mode": "nat", "lb_backend_vips": [VIP]}, "value of lb_backend_mode must be one of: dsr, ipip, got: nat"),
    ],
)
def test_wrong_variable_types_fail_with_the_argument_spec_message(backend, variables, message):
    proc = backend.play(**variables)
    assert proc.returncode != 0
    assert "Validation of arguments failed" in proc.stdout and message in proc.stdout, proc.stdout
    assert backend.addresses() == ["127.0.0.1"]


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"lb_backend_vips": []}, "lb_backend_vips []: expected at least one VIP"),
        ({"lb_backend_vips": ["198.51.100.300"]}, "lb_backend_vips[0] \"198.51.100.300\": expected an IPv4 address"),
        ({"lb_backend_vips": ["198.51.100.10/32"]}, "expected an IPv4 address such as 192.0.2.10 (no prefix length"),
        ({"lb_backend_vips": [VIP], "lb_backend_ipip_device": "a.b"}, "lb_backend_ipip_device \"a.b\": expected 1 to 15"),
        (
            {"lb_backend_vips": [VIP], "lb_backend_sysctl_file": "relative.conf"},
            "lb_backend_sysctl_file \"relative.conf\": expected an absolute path ending in .conf",
        ),
    ],
)
def test_bad_values_fail_naming_variable_value_and_expected_before_any_change(backend, variables, message):
    proc = backend.play(**variables)
    assert proc.returncode != 0 and message in proc.stdout, proc.stdout
    assert backend.addresses() == ["127.0.0.1"] and backend.sysctls() == {SYSCTLS[0]: "0", SYSCTLS[1]: "0"}


ARP_PROBE = """
import sys
from scapy.all import ARP, Ether, conf, srp1
conf.verb = 0
for target in sys.argv[2:]:
    reply = srp1(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=target), iface=sys.argv[1], timeout=1)
    print(target, "reply" if reply is not None and reply[ARP].psrc == target else "none")
"""

UDP_RECEIVER = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 5001))
sock.settimeout(10)
print("ready", flush=True)
print(sock.recvfrom(100)[0].decode(), flush=True)
"""


def _in(ns, *argv):
    return ["nsenter", "--net=/run/netns/%s" % ns.name] + list(argv)


def _arp(client, *targets) -> dict:
    out = subprocess.run(_in(client, sys.executable, "-c", ARP_PROBE, "cl0", *targets), capture_output=True, text=True, check=True, timeout=60).stdout
    return dict(line.split() for line in out.splitlines())


def test_dsr_backend_accepts_packets_for_the_vip_and_does_not_answer_arp_for_it(backend, netns):
    """The service works: a frame for the VIP sent to the backend's MAC (what the load balancer's DSR does) reaches
    a socket bound to the VIP, and the backend does not answer ARP for the VIP, which it would without the role's
    sysctls (checked first with the VIP alone on lo)."""
    client = netns("lbc")
    backend.ns.veth("bk0", "cl0", peer_ns=client, addr_a="198.51.100.2/24", addr_b="198.51.100.1/24")
    backend.ns.ip("addr", "add", VIP + "/32", "dev", "lo")
    assert _arp(client, VIP) == {VIP: "reply"}  # the kernel's default: any local address is answered
    backend.ns.ip("addr", "del", VIP + "/32", "dev", "lo")

    proc = backend.play(lb_backend_vips=[VIP])
    assert proc.returncode == 0, proc.stdout
    assert _arp(client, VIP, "198.51.100.2") == {VIP: "none", "198.51.100.2": "reply"}

    client.ip("route", "add", VIP + "/32", "via", "198.51.100.2")  # the DSR hop: the backend's MAC, the VIP kept
    receiver = subprocess.Popen(_in(backend.ns, sys.executable, "-c", UDP_RECEIVER, VIP), stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "ready"
        subprocess.run(
            _in(client, sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'to-the-vip', ('%s', 5001))" % VIP),
            check=True,
            timeout=60,
        )
        assert receiver.stdout.readline().strip() == "to-the-vip"
    finally:
        receiver.kill()
        receiver.wait()
