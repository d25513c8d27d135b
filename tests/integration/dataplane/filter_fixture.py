"""The xdp_filter loaded once with a reference rule set, for the table-driven tests and the benchmark.

Rule ids in the reference set are fixed here so cases can name the rule whose
counter must move; everything about layouts comes from the object's BTF.
"""

import os
import struct

from dataplane_btf import ObjectBtf, ipv4, ipv6, lpm
from harness import paths
from harness.progtest import LoadedProgram

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import xdp_filter_tables
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf

# source -> (action, rule id, redirect slot)
EXACT_V4 = {"192.0.2.66": ("drop", 1), "192.0.2.77": ("pass", 2), "192.0.2.21": ("drop", 16)}
EXACT_V6 = {"2001:db8::66": ("drop", 3), "2001:db8::77": ("pass", 4)}
PREFIX_V4 = {"198.51.100.0/24": ("drop", 5), "198.51.100.128/25": ("pass", 6), "203.0.113.0/24": ("redirect", 7, 1)}
PREFIX_V6 = {"2001:db8:bad::/48": ("drop", 8), "2001:db8:bad:1::/64": ("pass", 9)}
PORTS = {
    ("tcp", 80): ("pass", 10),
    ("udp", 53): ("drop", 11),
    ("tcp", 443): ("pass", 12),
    ("icmp", 8): ("drop", 13),
    ("icmpv6", 128): ("pass", 14),
    ("icmp", 0): ("pass", 15),
    ("tcp", 8080): ("redirect", 17, 2),
}
MGMT_V4 = ["192.0.2.16/28"]
MGMT_V6 = ["2001:db8:9::/48"]
MGMT_PORTS = [22]


class Filter(LoadedProgram):
    """xdp_filter with helpers to write its config and rules by name."""

    def __init__(self, v4_lookup: str = "table", path: str = None):
        super().__init__(path or paths.bpf_object("xdp_filter"), "xdp_filter")
        self.btf = ObjectBtf(self.obj.btf_raw())
        self.verdict = self.btf.enum("fleet_verdict")
        self.reason = self.btf.enum("fleet_filter_reason")
        self.v4_lookup = v4_lookup

    def configure(self, **fields):
        fields.setdefault("v4_lookup", self.v4_lookup)
        self.update("filter_config", struct.pack("<I", 0), self.btf.pack("fleet_filter_config", **fields))

    def stride_entries(self, rules: dict, below: bool = True) -> dict:
        """filter_v4 keys and values (bytes) for {address or CIDR: rule tuple}, through xdp_filter_tables; below=False:
        the /16 entries without the flags that say what is below them ("hosts", "blocks")."""
        flag_bits = self.btf.enum("fleet_stride_flags")
        out = {}
        table = xdp_filter_tables.expand_v4_raw(rules)
        extra = xdp_filter_tables.below_flags_v4(table) if below else {}
        for (level, block), (rule, flags) in table.items():
            if level == 16:
                flags = flags | extra.get(block, set())
            value = self.btf.pack(
                "fleet_stride_entry", rule=self.rule(*rule) if rule else bytes(self.btf.size("fleet_filter_rule")), flags=sum(flag_bits[f] for f in flags)
            )
            out[struct.pack("<I", level) + block.to_bytes(4, "big")] = value
        return out

    def fill(self, outer: str, entries: dict):
        """Write entries into the rule set currently in outer's slot (batch)."""
        fd = self.inner_fd(outer)
        try:
            if entries:
                keys, values = list(entries), list(entries.values())
                libbpf.map_update_batch(fd, b"".join(keys), b"".join(values), len(keys))
        finally:
            os.close(fd)

    def rule(self, action, rule_id, redirect_slot=0, mark=0) -> bytes:
        return self.btf.pack("fleet_filter_rule", action=action, rule_id=rule_id, redirect_slot=redirect_slot, mark=mark)

    def port_entries(self, rules: dict) -> dict:
        """filter_ports keys and values for {(proto, port or ICMP type): rule tuple}."""
        bits = self.btf.enum("fleet_port_flags")
        by_index = {}
        for (proto, num), rule in rules.items():
            fields = by_index.setdefault(num, {"set": 0})
            fields[proto] = self.rule(*rule)
            fields["set"] |= bits[proto]
        return {struct.pack("<I", num): self.btf.pack("fleet_port_rules", **fields) for num, fields in by_index.items()}

    def inner_fd(self, outer: str) -> int:
        """The fd of the rule set currently in the outer map's slot."""
        raw = libbpf.map_lookup(self.map_fd(outer), struct.pack("<I", 0), 4)
        map_id = struct.unpack("<I", raw)[0]
        return libbpf.map_fd_by_id(map_id)

    def load_reference_rules(self):
        v4 = dict(EXACT_V4)
        v4.update(PREFIX_V4)
        self.fill("filter_v4", self.stride_entries(v4))
        for outer, table, keyf in (
            ("filter_src_v4", EXACT_V4, ipv4),
            ("filter_src_v6", EXACT_V6, ipv6),
            ("filter_pfx_v4", PREFIX_V4, lpm),
            ("filter_pfx_v6", PREFIX_V6, lpm),
        ):
            fd = self.inner_fd(outer)
            try:
                for addr, rule in table.items():
                    libbpf.map_update(fd, keyf(addr), self.rule(*rule))
            finally:
                os.close(fd)
        self.fill("filter_ports", self.port_entries(PORTS))
        for cidr in MGMT_V4:
            self.update("filter_mgmt_v4", lpm(cidr), struct.pack("<I", 1))
        for cidr in MGMT_V6:
            self.update("filter_mgmt_v6", lpm(cidr), struct.pack("<I", 1))
        for num in MGMT_PORTS:
            self.update("filter_mgmt_ports", struct.pack("<I", num), struct.pack("<I", 1))

    def new_rule_set(self, outer: str, entries: dict, max_entries: int = 1024) -> int:
        """A new inner map (same type and sizes as the current one) holding entries; returns its fd."""
        cur = self.inner_fd(outer)
        try:
            info = libbpf.map_info(cur)
        finally:
            os.close(cur)
        if info["type"] == "array":  # arrays in one outer map must have the same size
            max_entries = info["max_entries"]
        fd = libbpf.map_create(info["type"], "swap", info["key_size"], info["value_size"], max_entries, map_flags=info["map_flags"])
        for key, value in entries.items():
            libbpf.map_update(fd, key, value)
        return fd

    def swap(self, outer: str, inner_fd: int):
        libbpf.map_update(self.map_fd(outer), struct.pack("<I", 0), struct.pack("<I", inner_fd))

    def counters(self) -> dict:
        """Every counter, summed over CPUs: {('verdict', name): (pkts, bytes), ('reason', ..), ('rule', id)}."""
        out = {}
        width = self.verdict["max"]
        for rname, rval in self.reason.items():
            for vname, vval in self.verdict.items():
                if rname == "max" or vname == "max":
                    continue
                pkts, nbytes = self.percpu_u64_sums("filter_stats", struct.pack("<I", rval * width + vval))
                for key in (("verdict", vname), ("reason", rname)):
                    old = out.get(key, (0, 0))
                    out[key] = (old[0] + pkts, old[1] + nbytes)
        for rule_id in range(1, 20):
            out[("rule", rule_id)] = self.percpu_u64_sums("filter_rule_stats", struct.pack("<I", rule_id))
        return out


def delta(before: dict, after: dict) -> dict:
    return {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after if after[k] != before.get(k)}
