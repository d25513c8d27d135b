"""tc_egress loaded with a reference class table, and __sk_buff context images built from vmlinux BTF."""

import functools
import struct

from harness import paths
from harness.progtest import LoadedProgram

from ansible_collections.ebpf.fleet.plugins.module_utils import filter_tables

from dataplane_btf import ObjectBtf, lpm, port

# class id -> class fields
CLASSES = {
    0: {"action": "pass"},
    1: {"action": "pass", "set_dscp": 1, "dscp": 46, "priority": 6},   # EF
    2: {"action": "drop"},
    3: {"action": "pass", "set_dscp": 1, "dscp": 10},                  # AF11
    4: {"action": "pass", "limit": "drop", "rate_bps": 1000, "burst_bytes": 150},
    5: {"action": "pass", "limit": "pace", "rate_bps": 1_000_000, "horizon_ns": 1_000_000},
    6: {"action": "pass", "set_dscp": 1, "dscp": 34},                  # AF41
    7: {"action": "pass", "set_dscp": 1, "dscp": 0},
}
DST_V4 = {"198.51.100.0/24": (2, 0, 0), "198.51.100.128/25": (1, 0, 0), "203.0.113.0/24": (1, "udp", 5060)}
DST_V6 = {"2001:db8:dead::/48": (2, 0, 0), "2001:db8:beef::/48": (3, 0, 0)}
PORTS = {("tcp", 443): 3, ("udp", 53): 7, ("tcp", 25): 2}
MARKS = {0x10: 6, 0x20: 2, 0x30: 4, 0x40: 5}


@functools.lru_cache(maxsize=1)
def kernel_btf() -> ObjectBtf:
    with open("/sys/kernel/btf/vmlinux", "rb") as handle:
        return ObjectBtf(handle.read())


def skb_ctx(mark: int = 0, tstamp: int = 0) -> bytes:
    """A struct __sk_buff image for BPF_PROG_TEST_RUN (the fields the kernel accepts as input)."""
    return kernel_btf().pack("__sk_buff", mark=mark, tstamp=tstamp)


def skb_field(ctx: bytes, name: str) -> int:
    return kernel_btf().unpack("__sk_buff", ctx)[name]


class Egress(LoadedProgram):
    def __init__(self):
        super().__init__(paths.bpf_object("tc_egress"), "tc_egress")
        self.btf = ObjectBtf(self.obj.btf_raw())
        self.outcome = self.btf.enum("fleet_egress_outcome")
        self.stride = self.outcome["outcomes"]

    def configure(self, **fields):
        self.update("egress_config", struct.pack("<I", 0), self.btf.pack("fleet_egress_config", **fields))

    def set_class(self, class_id: int, **fields):
        self.update("egress_classes", struct.pack("<I", class_id), self.btf.pack("fleet_egress_class", **fields))

    def reset_bucket(self, class_id: int):
        self.update("egress_buckets", struct.pack("<I", class_id), bytes(self.obj.map("egress_buckets").value_size))

    def load_reference(self):
        self.configure(default_class=0)
        for class_id, fields in CLASSES.items():
            self.set_class(class_id, **fields)
        for key, value in self.dst_v4_entries(DST_V4).items():
            self.update("egress_dst_v4", key, value)
        for cidr, (class_id, proto, num) in DST_V6.items():
            self.update("egress_dst_v6", lpm(cidr), self.btf.pack("fleet_egress_rule", class_id=class_id, proto=proto,
                                                                  port=port(num)))
        self.set_ports(PORTS)
        for mark, class_id in MARKS.items():
            self.update("egress_marks", struct.pack("<I", mark), self.btf.pack("fleet_egress_class_ref",
                                                                               class_id=class_id))

    def set_ports(self, rules: dict):
        """egress_ports entries for {(proto, port): class id}."""
        bits = self.btf.enum("fleet_port_flags")
        by_port = {}
        for (proto, num), class_id in rules.items():
            fields = by_port.setdefault(num, {"set": 0})
            fields[proto] = class_id
            fields["set"] |= bits[proto]
        for num, fields in by_port.items():
            self.update("egress_ports", struct.pack("<I", num), self.btf.pack("fleet_egress_port_classes", **fields))

    def dst_v4_entries(self, rules: dict) -> dict:
        """egress_dst_v4 keys and values for {CIDR: (class id, proto or 0, port or 0)}, through filter_tables."""
        bits = self.btf.enum("fleet_stride_flags")
        out, cache = {}, {}
        for (level, block), (rule, flags) in filter_tables.expand_v4_raw(rules).items():
            ck = (rule, tuple(sorted(flags)))
            if ck not in cache:
                packed = bytes(12)
                if rule:
                    packed = self.btf.pack("fleet_egress_rule", class_id=rule[0], proto=rule[1], port=port(rule[2]))
                cache[ck] = self.btf.pack("fleet_egress_stride_entry", rule=packed, flags=sum(bits[f] for f in flags))
            out[struct.pack("<I", level) + block.to_bytes(4, "big")] = cache[ck]
        return out

    def counters(self) -> dict:
        out = {}
        for class_id in CLASSES:
            for name, val in self.outcome.items():
                if val < self.stride:
                    key = struct.pack("<I", class_id * self.stride + val)
                    out[(class_id, name)] = self.percpu_u64_sums("egress_stats", key)
        return out
