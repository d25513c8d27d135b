"""tc_egress loaded with a reference class table, and __sk_buff context images built from vmlinux BTF."""

import functools
import struct

from dataplane_btf import ObjectBtf, lpm, port
from harness import paths
from harness.progtest import LoadedProgram

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import tc_egress_tables
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf

# class id -> class fields
CLASSES = {
    0: {"action": "pass"},
    1: {"action": "pass", "set_dscp": 1, "dscp": 46, "priority": 6},  # EF
    2: {"action": "drop"},
    3: {"action": "pass", "set_dscp": 1, "dscp": 10},  # AF11
    4: {"action": "pass", "limit": "drop", "rate_bps": 1000, "burst_bytes": 150},
    5: {"action": "pass", "limit": "pace", "rate_bps": 1_000_000, "horizon_ns": 1_000_000},
    6: {"action": "pass", "set_dscp": 1, "dscp": 34},  # AF41
    7: {"action": "pass", "set_dscp": 1, "dscp": 0},
}
DST_V4 = {"198.51.100.0/24": (2, 0, 0), "198.51.100.128/25": (1, 0, 0), "203.0.113.0/24": (1, "udp", 5060)}
DST_V6 = {"2001:db8:dead::/48": (2, 0, 0), "2001:db8:beef::/48": (3, 0, 0)}
PORTS = {("tcp", 443): 3, ("udp", 53): 7, ("tcp", 25): 2}
MARKS = {0x10: 6, 0x20: 2, 0x30: 4, 0x40: 5, 0x10000: 3, 0xFFFF: 7}  # 0x10000: above the direct array


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

    def set_class(self, class_id: int, raw_fields: bool = False, **fields):
        """Write a class as tc_egress_tables.class_value() makes it, or (raw_fields) only the fields given,
        which leaves the derived ones for the program to compute."""
        if not raw_fields:
            fields = tc_egress_tables.class_value(fields)
        self.update("egress_classes", struct.pack("<I", class_id), self.btf.pack("fleet_egress_class", **fields))

    def get_class(self, class_id: int) -> dict:
        return self.btf.unpack("fleet_egress_class", self.lookup("egress_classes", struct.pack("<I", class_id)))

    def reset_bucket(self, class_id: int):
        self.update("egress_buckets", struct.pack("<I", class_id), bytes(self.obj.map("egress_buckets").value_size))

    def load_reference(self):
        self.configure(default_class=0)
        for class_id, fields in CLASSES.items():
            self.set_class(class_id, **fields)
        self.load_dst_v4(DST_V4)
        for cidr, (class_id, proto, num) in DST_V6.items():
            self.update("egress_dst_v6", lpm(cidr), self.btf.pack("fleet_egress_rule", class_id=class_id, proto=proto, port=port(num)))
        self.set_ports(PORTS)
        self.set_marks(MARKS)

    def set_marks(self, marks: dict):
        direct, wide = tc_egress_tables.mark_entries(marks)
        for mark, fields in direct.items():
            self.update("egress_mark_classes", struct.pack("<I", mark), self.btf.pack("fleet_egress_mark_slot", **fields))
        for mark, fields in wide.items():
            self.update("egress_marks", struct.pack("<I", mark), self.btf.pack("fleet_egress_class_ref", **fields))

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
        """{map name: {key: value}} for egress_dst_v4_16, _24 and _32, for {CIDR: (class id, proto or 0, port or 0)},
        through tc_egress_tables (xdp_filter_tables' stride expansion, split by level)."""
        bits = self.btf.enum("fleet_stride_flags")
        rules_cache, flags_cache = {}, {}

        def rule_bytes(rule):
            if rule not in rules_cache:
                rules_cache[rule] = bytes(12) if rule is None else self.btf.pack("fleet_egress_rule", class_id=rule[0], proto=rule[1], port=port(rule[2]))
            return rules_cache[rule]

        def flag_bits(flags):
            key = tuple(sorted(flags))
            if key not in flags_cache:
                flags_cache[key] = sum(bits[f] for f in flags)
            return flags_cache[key]

        level16, level24, level32 = tc_egress_tables.expand_v4(rules)
        return {
            "egress_dst_v4_16": {
                struct.pack("<I", index): self.btf.pack("fleet_egress_stride_entry", rule=rule_bytes(rule), flags=flag_bits(flags))
                for index, (rule, flags) in level16.items()
            },
            "egress_dst_v4_24": {
                network.to_bytes(4, "big"): self.btf.pack("fleet_egress_stride24", rule=rule_bytes(rule), flags=flag_bits(flags), hosts=hosts)
                for network, (rule, flags, hosts) in level24.items()
            },
            "egress_dst_v4_32": {address.to_bytes(4, "big"): rule_bytes(rule) for address, rule in level32.items()},
        }

    def load_dst_v4(self, rules: dict):
        """Write the IPv4 destination rules into the three levels' maps (batch updates)."""
        for name, entries in self.dst_v4_entries(rules).items():
            if entries:
                libbpf.map_update_batch(self.map_fd(name), b"".join(entries), b"".join(entries.values()), len(entries))

    def counters(self) -> dict:
        out = {}
        for class_id in CLASSES:
            for name, val in self.outcome.items():
                if val < self.stride:
                    key = struct.pack("<I", class_id * self.stride + val)
                    out[(class_id, name)] = self.percpu_u64_sums("egress_stats", key)
        return out
