"""xdp_lb under test: load it, write its maps from VIP declarations (via xdp_lb_entries.lb_entries), predict its choices.

The byte layouts below mirror bpf/include/fleet/lb.h; test_xdp_lb checks them
against the object's map sizes so a change in the header cannot go unnoticed.
"""

import ipaddress
import struct

from harness import paths
from harness.cpus import on_cpu
from harness.progtest import LoadedProgram

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import maglev, xdp_lb_entries
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf

PROTO = {"tcp": 6, "udp": 17}
MODE = {"dsr": 0, "ipip": 1}
FAMILY = {"ipv4": 4, "ipv6": 6}
STATS = ["pass_non_vip", "pass_unparsed", "pass_fragment", "ct_hit", "ct_miss", "syn", "rst", "udp_expired", "drop_no_backend", "drop_encap", "tx"]
LB_MAC = "02:00:00:00:ff:01"
TUNNEL_V4 = "203.0.113.0/24"
TUNNEL_V6 = "2001:db8:7e::/96"


def mac_bytes(text):
    return bytes(int(x, 16) for x in text.split(":"))


def vip_key(vip, port, proto):
    addr = ipaddress.ip_address(vip).packed
    return addr + struct.pack(">HH", port, 0) + struct.pack("<I", PROTO[proto])


def config_value(ring_size, udp_timeout_ms=0, lb_mac=LB_MAC, tunnel_v4=TUNNEL_V4, tunnel_v6=TUNNEL_V6):
    n4 = ipaddress.ip_network(tunnel_v4) if tunnel_v4 else None
    n6 = ipaddress.ip_network(tunnel_v6) if tunnel_v6 else None
    return (
        struct.pack("<II", ring_size, udp_timeout_ms)
        + mac_bytes(lb_mac)
        + b"\0\0"
        + struct.pack("<I", n4.prefixlen if n4 else 0)
        + (n4.network_address.packed if n4 else bytes(4))
        + struct.pack("<I", n6.prefixlen if n6 else 0)
        + (n6.network_address.packed if n6 else bytes(16))
    )


def backend_value(value):
    return (
        struct.pack("<I", FAMILY[value["family"]])
        + mac_bytes(value["mac"])
        + b"\0\0"
        + ipaddress.IPv4Address(value["addr4"]).packed
        + ipaddress.IPv6Address(value["addr6"]).packed
    )


class LB:
    """A loaded xdp_lb with its maps written from declarations; predicts backends like the data plane."""

    def __init__(self, vips, ring_size=1009, rows=8, max_backends=4096, obj=None, **config):
        """obj: another build of xdp_lb.c (e.g. with other -D values) instead of `make bpf`'s."""
        self.ring_size = ring_size
        sizes = {"lb_ring": rows * ring_size, "lb_backends": max_backends, "lb_backend_stats": max_backends}
        # chained: the next program sits in slot 1 of fleet_chain, as the loader would set it
        self.prog = LoadedProgram(obj or paths.bpf_object("xdp_lb"), "xdp_lb", max_entries=sizes, rodata={"fleet_chain_next": 1})
        self.config(**config)
        self.entries = None
        self.apply(vips)

    def close(self):
        self.prog.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def config(self, **kwargs):
        self.prog.update("lb_config", struct.pack("<I", 0), config_value(self.ring_size, **kwargs))

    def apply(self, vips):
        """Write the maps for these declarations, keeping ids of the previous run."""
        prev = self.entries or {}
        self.entries = xdp_lb_entries.lb_entries(vips, self.ring_size, prev.get("backend_ids"), prev.get("vip_ids"))
        for key, value in self.entries["lb_vips_v4"] + self.entries["lb_vips_v6"]:
            self.prog.update(
                "lb_vips_v%d" % ipaddress.ip_address(key["vip"]).version,
                vip_key(key["vip"], key["port"], key["proto"]),
                struct.pack("<III", value["id"], value["ring"], MODE[value["mode"]]),
            )
        for bid, value in self.entries["lb_backends"]:
            self.prog.update("lb_backends", struct.pack("<I", bid), backend_value(value))
        for row, ids in self.entries["lb_ring"].items():
            self.write_ring(row, ids)

    def write_ring(self, row, ids):
        keys = struct.pack("<%dI" % len(ids), *range(row * self.ring_size, row * self.ring_size + len(ids)))
        libbpf.map_update_batch(self.prog.map_fd("lb_ring"), keys, struct.pack("<%dI" % len(ids), *ids), len(ids))

    def remove_backend(self, bid):
        self.prog.update("lb_backends", struct.pack("<I", bid), bytes(32))

    def vip_id(self, vip, port, proto):
        return self.entries["vip_ids"]["%s:%d/%s" % (ipaddress.ip_address(vip), port, proto)]

    def backend_id(self, name):
        return self.entries["backend_ids"][name]

    def backend(self, bid):
        return dict(self.entries["lb_backends"])[bid]

    def maglev_backend(self, src, dst, sport, dport, proto):
        """The backend id the ring gives this flow (hash and slot as in the data plane)."""
        h = maglev.flow_hash(src, dst, sport, dport, PROTO[proto])
        return self.entries["lb_ring"][self.vip_id(dst, dport, proto)][maglev.slot_of(h, self.ring_size)]

    def run(self, packet, cpu=None):
        """One BPF_PROG_TEST_RUN, on CPU `cpu` when given (it runs on the calling thread's CPU)."""
        if cpu is None:
            return self.prog.run(packet)
        with on_cpu(cpu):
            return self.prog.run(packet)

    def stats(self):
        return {name: self.prog.percpu_u64_sums("lb_stats", struct.pack("<I", i)) for i, name in enumerate(STATS)}

    def vip_stats(self, vid):
        return self.prog.percpu_u64_sums("lb_vip_stats", struct.pack("<I", vid))

    def backend_stats(self, bid):
        return self.prog.percpu_u64_sums("lb_backend_stats", struct.pack("<I", bid))

    def flush_conntrack(self):
        for name, key_size in (("lb_conntrack_v4", 16), ("lb_conntrack_v6", 40)):
            fd = self.prog.map_fd(name)
            for key in list(libbpf.map_keys(fd, key_size)):
                libbpf.map_delete(fd, key)
