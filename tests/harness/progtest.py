"""Run BPF programs on packets with BPF_PROG_TEST_RUN, and read their per-CPU counters.

with LoadedProgram(paths.bpf_object("xdp_filter"), "xdp_filter") as prog:
    result = prog.run(raw(Ether()/IP()/UDP(dport=53)))
    assert result.retval == XDP_DROP
"""

import struct

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import loader

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
TC_ACT_UNSPEC, TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = -1, 0, 2, 7


class LoadedProgram:
    """An object loaded once; run its program on packets; read and write its maps by name."""

    def __init__(self, path: str, program: str, max_entries: dict = None, before_load=None, rodata: dict = None):
        """rodata: `volatile const` values to set before load, e.g. {"fleet_chain_next": 1} to chain on."""
        self.obj = libbpf.BpfObject.open(path)
        for name, size in (max_entries or {}).items():
            self.obj.map(name).set_max_entries(size)
        # as the loader does: a BPF_F_NO_COMMON_LRU map declares its capacity per CPU (docs/lb.md)
        loader.size_per_cpu_maps(self.obj)
        for var, value in (rodata or {}).items():
            loader.set_rodata(self.obj, var, value)
        if before_load is not None:
            before_load(self.obj)
        self.obj.load()
        self.prog_fd = self.obj.program(program).fd
        self.ncpus = libbpf.num_possible_cpus()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.obj.close()

    def run(self, packet: bytes, repeat: int = 1, ctx: bytes = b"") -> libbpf.TestRunResult:
        return libbpf.prog_test_run(self.prog_fd, packet, repeat=repeat, ctx=ctx)

    def map_fd(self, name: str) -> int:
        return self.obj.map(name).fd

    def update(self, name: str, key: bytes, value: bytes):
        libbpf.map_update(self.map_fd(name), key, value)

    def lookup(self, name: str, key: bytes):
        item = self.obj.map(name)
        size = item.value_size
        if item.type in libbpf.PERCPU_MAP_TYPES:
            size = ((size + 7) // 8 * 8) * self.ncpus
        return libbpf.map_lookup(item.fd, key, size)

    def percpu_u64_sums(self, name: str, key: bytes) -> tuple:
        """Sum each u64 field of a per-CPU value over all CPUs (e.g. packets, bytes)."""
        item = self.obj.map(name)
        raw = self.lookup(name, key)
        if raw is None:
            return tuple([0] * (item.value_size // 8))
        stride = (item.value_size + 7) // 8 * 8
        fields = item.value_size // 8
        sums = [0] * fields
        for cpu in range(self.ncpus):
            values = struct.unpack_from("<%dQ" % fields, raw, cpu * stride)
            sums = [a + b for a, b in zip(sums, values)]
        return tuple(sums)


def xdp_md(frame_len: int, ingress_ifindex: int = 0, rx_queue_index: int = 0) -> bytes:
    """An xdp_md context image (data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex)
    for test runs that read the ingress interface or queue; data_end must be the frame's length."""
    return struct.pack("<IIIIII", 0, frame_len, 0, ingress_ifindex, rx_queue_index, 0)
