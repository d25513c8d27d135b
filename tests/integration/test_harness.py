"""The harness itself: namespaces and links are real, private, and removed; libbpf loads and runs programs."""

import os

import pytest
from harness import paths
from harness.netns import leftover_namespaces

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf

pytestmark = pytest.mark.kernel


def test_namespaces_hold_every_link_kind_and_disappear(netns):
    ns = netns("h")
    ns.veth("va", "vb")
    ns.bridge("br0")
    ns.macvlan("mv0", parent="va")
    ns.tun("tun0")
    kinds = {link["ifname"]: link.get("linkinfo", {}).get("info_kind") for link in ns.links()}
    assert kinds["va"] == "veth" and kinds["br0"] == "bridge" and kinds["mv0"] == "macvlan"
    assert kinds["tun0"] == "tun"
    assert os.path.exists(ns.path)
    errors = netns.delete_all()
    assert not errors and not os.path.exists(ns.path)
    assert not leftover_namespaces()


def test_pin_root_is_on_bpffs_and_private(pin_root):
    assert os.path.isdir(pin_root)
    with open("/proc/self/mounts") as handle:
        assert any(line.split()[2] == "bpf" for line in handle)


def test_libbpf_loads_a_program_and_runs_it_on_a_packet():
    with libbpf.BpfObject.open(paths.bpf_object("xdp_count")) as obj:
        obj.load()
        result = libbpf.prog_test_run(obj.program("xdp_count").fd, b"\x00" * 64, repeat=10)
        assert result.retval == 2  # XDP_PASS
        cpus = libbpf.num_possible_cpus()
        keys, values, count = libbpf.map_lookup_batch(obj.map("hits").fd, 4, 16 * cpus, 4)
        assert count == 4
        packets = sum(int.from_bytes(values[i * 16 : i * 16 + 8], "little") for i in range(cpus))
        assert packets == 10
