# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The load balancer's tables on the host: read the live maps, plan, swap rings atomically.

Used by the lb_tables module. Everything the plan needs is read from the kernel
(no state is kept anywhere else), so every controller, and a re-run after a
failure, computes the same plan:

- a backend is known by its address (what lb_backends holds): a declared
  backend whose address is in lb_backends keeps that id, a new one takes the
  lowest free id (family none), and a backend no VIP declares any more is
  freed (family none) only after no ring refers to it; a drained backend
  (weight 0) keeps its id and its entry, so its established flows keep going;
- a VIP is known by its key (address, port, protocol): it keeps its id;
- each VIP's weighted Maglev ring is computed here and compared with the row
  the VIP's `ring` field points at. A new ring goes into a free row (a row no
  VIP refers to; lb_ring holds max_entries / ring_size rows) with one batch
  update, then the VIP's value is replaced in one update, which flips the
  data plane to the new row atomically; the old row is then free.

Order of the writes: lb_config, new and changed backends, VIPs removed, new
VIPs (ring first), changed rings (spare row, then the flip), removed backends
last. Every entry is validated and the whole plan computed before the first
write; check mode stops there.
"""

from __future__ import annotations

import array
import collections
import ipaddress
import os
import struct
from dataclasses import dataclass, field

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import maglev, xdp_lb_entries
from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError
from ansible_collections.ebpf.fleet.plugins.module_utils.host import records
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_records, map_sync, map_types
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import CodecError, MapCodec, read_raw

MAPS = ("lb_config", "lb_backends", "lb_vips_v4", "lb_vips_v6", "lb_ring")
U32 = struct.Struct("<I")


class LbTablesError(FleetError):
    """An operator-facing failure: message plus details (extra result keys such as applied)."""


# ---------------------------------------------------------------- the live maps


class LiveMap:
    """One pinned map of the deployment: fd, codec, and its contents as {key bytes: value bytes}."""

    def __init__(self, name: str, path: str):
        self.name = name
        self.path = path
        self.fd = -1
        self.codec = None
        self.info = None

    def open(self) -> None:
        try:
            self.fd = libbpf.obj_get(self.path)
            self.info = libbpf.map_info(self.fd)
            self.codec = MapCodec.for_fd(self.fd)
        except libbpf.BpfError as exc:
            raise LbTablesError("cannot open the map pin %s: %s" % (self.path, exc))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self) -> tuple:
        """(keys, values, count) raw, with one batch lookup."""
        try:
            return read_raw(self.fd, self.codec)
        except libbpf.BpfError as exc:
            raise LbTablesError("cannot read %s: %s" % (self.path, exc))

    def entries(self) -> dict:
        keys, values, count = self.read()
        ks, vs = self.codec.key_size, self.codec.value_buf_size
        return {keys[i * ks : (i + 1) * ks]: values[i * vs : (i + 1) * vs] for i in range(count)}


class Deployment:
    """The maps of an xdp_lb deployment pinned at pin_root/name/maps."""

    def __init__(self, pin_root: str, name: str):
        self.maps = {m: LiveMap(m, bpffs.map_pin(pin_root, name, m)) for m in MAPS}
        self.folder = os.path.dirname(self.maps["lb_ring"].path)

    def missing(self) -> list:
        return [m for m, live in self.maps.items() if not os.path.exists(live.path)]

    def open(self) -> None:
        try:
            for live in self.maps.values():
                live.open()
        except LbTablesError:
            self.close()
            raise
        ring = self.maps["lb_ring"].info
        if ring["type"] != "array" or ring["key_size"] != 4 or ring["value_size"] != 4:
            self.close()
            raise LbTablesError(
                "%s is not xdp_lb's lb_ring (expected an array of __u32, got a %s with %d-byte "
                "keys and %d-byte values)" % (self.maps["lb_ring"].path, ring["type"], ring["key_size"], ring["value_size"])
            )

    def close(self) -> None:
        for live in self.maps.values():
            live.close()

    def __getitem__(self, name: str) -> LiveMap:
        return self.maps[name]


@dataclass
class LiveVip:
    ident: str
    key: bytes
    family: int
    vid: int
    row: int
    mode: str


@dataclass
class State:
    """What the kernel holds, decoded to what the plan needs."""

    ring_size: int  # of the running config (0 in the map: the default)
    config: dict  # lb_config in operator notation (without ring_size)
    config_raw: bytes
    backends: dict  # address text -> (id, mac)
    backend_slots: int  # lb_backends max_entries
    free_ids: list  # backend ids of family none, ascending
    vips: dict  # ident -> LiveVip
    vip_slots: int  # VIP ids available (lb_vip_stats size, or lb_vips max)
    rows: int  # rows of lb_ring at ring_size
    ring: dict = field(default_factory=dict)  # row -> its values (the rows VIPs refer to)
    dedup: list = field(default_factory=list)  # ids holding an address another id also holds


def _ident(key: dict) -> str:
    return "%s:%d/%s" % (ipaddress.ip_address(key["vip"]), key["port"], key["proto"])


def read_state(dep: Deployment, ring_size: int) -> State:
    cfg_map = dep["lb_config"]
    cfg_raw = cfg_map.entries().get(b"\0\0\0\0", cfg_map.codec.zero_value)
    cfg = cfg_map.codec.decode_value(cfg_raw)
    live_size = cfg.pop("ring_size", 0) or maglev.DEFAULT_RING_SIZE
    be_map = dep["lb_backends"]
    backends, free_ids, dedup = {}, [], []
    zero = be_map.codec.zero_value
    for kb, vb in sorted(be_map.entries().items(), key=lambda kv: U32.unpack(kv[0])[0]):
        bid = U32.unpack(kb)[0]
        if vb == zero:  # family none: a free id (most of the array; not worth decoding)
            free_ids.append(bid)
            continue
        value = be_map.codec.decode_value(vb)
        family = value.get("family")
        if family not in ("ipv4", "ipv6"):
            free_ids.append(bid)
            continue
        addr = value["addr4"] if family == "ipv4" else value["addr6"]
        addr = str(ipaddress.ip_address(addr))
        if addr in backends:
            dedup.append(bid)  # the same address twice (written by hand): this one is freed
            continue
        backends[addr] = (bid, value["mac"])
    vips = {}
    for family in (4, 6):
        vmap = dep["lb_vips_v%d" % family]
        for kb, vb in vmap.entries().items():
            key = vmap.codec.decode_key(kb)
            value = vmap.codec.decode_value(vb)
            ident = _ident(key)
            vips[ident] = LiveVip(ident, kb, family, value["id"], value["ring"], value["mode"])
    ring_info = dep["lb_ring"].info
    # a VIP id indexes lb_vip_stats, sized like lb_vips_v4 (FLEET_LB_MAX_VIPS); v4 and v6 share the ids
    vip_slots = dep["lb_vips_v4"].info["max_entries"]
    state = State(
        ring_size=live_size,
        config=cfg,
        config_raw=cfg_raw,
        backends=backends,
        backend_slots=be_map.info["max_entries"],
        free_ids=free_ids,
        vips=vips,
        vip_slots=vip_slots,
        rows=ring_info["max_entries"] // ring_size,
        dedup=dedup,
    )
    state.ring = {live.row: read_row(dep["lb_ring"], live.row, ring_size) for live in vips.values() if live.row < state.rows}
    return state


def read_row(live: LiveMap, row: int, ring_size: int) -> bytes:
    """One row of lb_ring: ring_size values from key row * ring_size."""
    try:
        return map_types.read_array_range(live.fd, row * ring_size, ring_size, 4)
    except libbpf.BpfError as exc:
        raise LbTablesError("cannot read row %d of %s: %s" % (row, live.path, exc)) from None


def empty_state(ring_size: int) -> State:
    """A deployment whose maps are not pinned yet (check mode on a new host): nothing is there."""
    return State(ring_size=ring_size, config={}, config_raw=b"", backends={}, backend_slots=1 << 31, free_ids=[], vips={}, vip_slots=1 << 31, rows=1 << 31)


# ---------------------------------------------------------------- the plan


@dataclass
class VipPlan:
    vip: xdp_lb_entries.Vip
    vid: int
    row: int  # row the VIP points at after the run
    old_row: int = -1  # -1: a new VIP
    ring: bytes = b""  # the new ring (when it is written)
    moved: int = 0  # slots whose backend changes
    slots_before: dict = field(default_factory=dict)  # backend id -> slots
    slots_after: dict = field(default_factory=dict)
    mode_changed: bool = False
    live_key: bytes = b""  # the VIP's key as the kernel holds it (the flip replaces exactly that entry)


@dataclass
class Plan:
    config: bytes = b""  # new lb_config value, or b""
    config_change: dict = field(default_factory=dict)  # field -> [before, after]
    backend_writes: dict = field(default_factory=dict)  # id -> (address, mac, kind: added|mac)
    backend_frees: dict = field(default_factory=dict)  # id -> address
    vips_removed: list = field(default_factory=list)  # LiveVip
    vips_added: list = field(default_factory=list)  # VipPlan
    vips_changed: list = field(default_factory=list)  # VipPlan (ring or mode)
    vips_kept: list = field(default_factory=list)  # VipPlan
    backend_ids: dict = field(default_factory=dict)  # address -> id after the run
    drained: dict = field(default_factory=dict)  # ident -> [addresses at weight 0]

    @property
    def empty(self) -> bool:
        return not (self.config or self.backend_writes or self.backend_frees or self.vips_removed or self.vips_added or self.vips_changed)


def _counts(ring: bytes) -> dict:
    ids = array.array("I")
    ids.frombytes(ring)
    return dict(collections.Counter(ids))


def _moved(old: bytes, new: bytes) -> int:
    if old == new:
        return 0
    a, b = array.array("I"), array.array("I")
    a.frombytes(old)
    b.frombytes(new)
    return sum(1 for x, y in zip(a, b) if x != y)


def ring_bytes(vip: xdp_lb_entries.Vip, ids: dict, ring_size: int) -> bytes:
    """The VIP's Maglev ring as lb_ring values: ring_size backend ids (BACKEND_NONE without a backend)."""
    try:
        table = maglev.build_table([(be.key, be.weight) for be in vip.backends], ring_size)
    except maglev.MaglevError as exc:
        raise maglev.MaglevError("VIP %s: %s" % (vip.ident, exc)) from None
    lookup = [ids[str(be.address)] for be in vip.backends]
    none = maglev.BACKEND_NONE
    return array.array("I", [none if i == none else lookup[i] for i in table]).tobytes()


def make_plan(vips: list, config: dict, ring_size: int, state: State, codecs) -> Plan:
    """The plan for declarations (xdp_lb_entries.validate_vips) against the live state; raises LbTablesError
    for a declaration the deployment cannot hold (too many VIPs, backends or rows)."""
    plan = Plan()
    if state.vips and state.ring_size != ring_size:
        raise LbTablesError(
            "ring_size %d: the running load balancer uses %d. Changing the ring size rewrites "
            "every ring at once; deploy with vips: [] first, or keep ring_size=%d" % (ring_size, state.ring_size, state.ring_size),
            ring_size=state.ring_size,
        )
    # lb_config
    wanted_cfg = xdp_lb_entries.lb_config(ring_size=ring_size, **config)
    if codecs is not None:
        new_raw = codecs["lb_config"].encode_value(wanted_cfg, "config")
        if new_raw != state.config_raw:
            plan.config = new_raw
            before = dict(state.config, ring_size=state.ring_size) if state.config_raw else {}
            plan.config_change = {k: [before.get(k), v] for k, v in wanted_cfg.items() if before.get(k) != v}
    else:  # no deployment yet: the whole config is new
        plan.config = b"\0"
        plan.config_change = {k: [None, v] for k, v in wanted_cfg.items()}
    # backends: one id per address across every VIP
    macs, where = {}, {}
    for vip in vips:
        for be in vip.backends:
            addr = str(be.address)
            if addr in macs and macs[addr] != be.mac:
                raise LbTablesError(
                    "backend %s: declared with mac %s (VIP %s) and %s (VIP %s); lb_backends holds "
                    "one MAC per backend address" % (addr, macs[addr], where[addr], be.mac, vip.ident)
                )
            macs[addr] = be.mac
            where.setdefault(addr, vip.ident)
    free = list(state.free_ids)
    used = {bid for bid, _mac in state.backends.values()} | set(state.dedup)
    next_new = max(used | set(free), default=-1) + 1
    for addr in sorted(macs, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a))):
        if addr in state.backends:
            bid, mac = state.backends[addr]
            if mac != macs[addr]:
                plan.backend_writes[bid] = (addr, macs[addr], "mac")
        else:
            if free:
                bid = free.pop(0)
            else:
                bid = next_new
                next_new += 1
            if bid >= state.backend_slots:
                raise LbTablesError(
                    "backend %s: lb_backends holds %d backends and all are in use; build xdp_lb "
                    "with a larger FLEET_LB_MAX_BACKENDS" % (addr, state.backend_slots)
                )
            plan.backend_writes[bid] = (addr, macs[addr], "added")
        plan.backend_ids[addr] = bid
    for addr, (bid, _mac) in state.backends.items():
        if addr not in macs:
            plan.backend_frees[bid] = addr
    for bid in state.dedup:
        plan.backend_frees[bid] = "(duplicate)"
    # VIPs and rows
    wanted = {vip.ident: vip for vip in vips}
    plan.vips_removed = [live for ident, live in sorted(state.vips.items()) if ident not in wanted]
    # rows free from the start are used first; rows freed during the run only when they run out
    # a row is free when no VIP refers to it (rows shared by VIPs written by hand are counted)
    referenced = {}
    for live in state.vips.values():
        referenced[live.row] = referenced.get(live.row, 0) + 1
    free_rows = [r for r in range(min(state.rows, 1 << 16)) if r not in referenced] if state.rows < 1 << 31 else None
    freed_rows = []

    def leave(row: int) -> None:
        referenced[row] -= 1
        if not referenced[row] and row < state.rows:
            freed_rows.append(row)

    for live in plan.vips_removed:
        leave(live.row)
    used_vids = {live.vid for ident, live in state.vips.items() if ident in wanted}
    next_vid = 0
    new_row_counter = [0]

    def take_row(what: str) -> int:
        if free_rows is None:  # no deployment yet (check mode): rows as a fresh one would give them
            new_row_counter[0] += 1
            return new_row_counter[0] - 1
        if free_rows:
            return free_rows.pop(0)
        if freed_rows:
            return freed_rows.pop(0)
        raise LbTablesError(
            "%s: lb_ring holds %d rows of %d slots and every row is in use; a ring swap needs a "
            "spare row. Declare fewer VIPs or build xdp_lb with FLEET_LB_RING_ENTRIES of at least "
            "(VIPs + 1) * %d" % (what, state.rows, ring_size, ring_size),
            rows=state.rows,
        )

    for vip in vips:
        ring = ring_bytes(vip, plan.backend_ids, ring_size)
        live = state.vips.get(vip.ident)
        if live is None:
            while next_vid in used_vids:
                next_vid += 1
            if next_vid >= state.vip_slots:
                raise LbTablesError("VIP %s: no free VIP id (%d)" % (vip.ident, state.vip_slots))
            used_vids.add(next_vid)
            vp = VipPlan(vip=vip, vid=next_vid, row=take_row("VIP %s" % vip.ident), ring=ring, slots_after=_counts(ring))
            plan.vips_added.append(vp)
        else:
            old = state.ring.get(live.row, b"")
            vp = VipPlan(vip=vip, vid=live.vid, row=live.row, old_row=live.row, mode_changed=live.mode != vip.mode, live_key=live.key)
            if old != ring:
                vp.ring = ring
                vp.moved = _moved(old, ring) if len(old) == len(ring) else ring_size
                vp.slots_before, vp.slots_after = _counts(old), _counts(ring)
                vp.row = take_row("VIP %s" % vip.ident)
                leave(live.row)
            (plan.vips_changed if vp.ring or vp.mode_changed else plan.vips_kept).append(vp)
        drained = [str(be.address) for be in vip.backends if be.weight == 0]
        if drained:
            plan.drained[vip.ident] = drained
    return plan


# ---------------------------------------------------------------- the plan in the operator's notation


def describe(plan: Plan, state: State) -> dict:
    """added / removed / changed VIPs and backends, rings as 'N slots move'."""
    addr_of = {bid: addr for addr, (bid, _mac) in state.backends.items()}
    state_ids = set(addr_of)
    addr_of.update({bid: addr for bid, (addr, _mac, _kind) in plan.backend_writes.items()})

    def backend_changes(vp: VipPlan) -> list:
        """Backends whose slots change: added, removed, drained, restored (weight back from 0), reweighted,
        or rebalanced (slots moved because other backends changed)."""
        weights = {str(be.address): be.weight for be in vp.vip.backends}
        ids = sorted(bid for bid in set(vp.slots_before) | set(vp.slots_after) if bid != maglev.BACKEND_NONE)
        # the kernel keeps no weights: a backend's old weight is read as its share of the old ring, so the
        # ratio declared weight / old slots is the same for every backend whose weight did not change
        ratio = {bid: weights[addr_of[bid]] / vp.slots_before[bid] for bid in ids if vp.slots_before.get(bid) and weights.get(addr_of.get(bid), 0) > 0}
        reference = None
        if ratio:

            def close(a, b):
                return abs(a - b) <= 0.1 * max(a, b)

            reference = max(ratio.values(), key=lambda r: sum(1 for other in ratio.values() if close(r, other)))
        out = []
        for bid in ids:
            addr = addr_of.get(bid, "id %d" % bid)
            before, after = vp.slots_before.get(bid, 0), vp.slots_after.get(bid, 0)
            if before == after:
                continue
            if addr not in weights:
                kind = "removed"
            elif weights[addr] == 0:
                kind = "drained"
            elif not before:
                kind = "added" if bid not in state_ids else "restored"
            elif abs(ratio[bid] - reference) > 0.1 * max(ratio[bid], reference):
                kind = "reweighted"
            else:
                kind = "rebalanced"
            out.append({"backend": addr, "id": bid, "change": kind, "slots": [before, after]})
        return out

    def vip_entry(vp: VipPlan) -> dict:
        item = {"vip": vp.vip.ident, "id": vp.vid, "mode": vp.vip.mode, "ring": vp.row, "backends": len([be for be in vp.vip.backends if be.weight > 0])}
        return item

    changed = []
    for vp in plan.vips_changed:
        item = vip_entry(vp)
        if vp.ring:
            item.update(ring=[vp.old_row, vp.row], slots_moved=vp.moved, backend_changes=backend_changes(vp))
        if vp.mode_changed:
            item["mode"] = [state.vips[vp.vip.ident].mode, vp.vip.mode]
        changed.append(item)
    return {
        "config": plan.config_change if plan.config else {},
        "backends_added": [{"address": a, "id": bid, "mac": mac} for bid, (a, mac, kind) in sorted(plan.backend_writes.items()) if kind == "added"],
        "backends_updated": [
            {"address": a, "id": bid, "mac": [state.backends[a][1], mac]} for bid, (a, mac, kind) in sorted(plan.backend_writes.items()) if kind == "mac"
        ],
        "backends_removed": [{"address": a, "id": bid} for bid, a in sorted(plan.backend_frees.items())],
        "vips_added": [dict(vip_entry(vp), backend_changes=backend_changes(vp)) for vp in plan.vips_added],
        "vips_removed": [{"vip": live.ident, "id": live.vid, "ring": live.row} for live in plan.vips_removed],
        "vips_changed": changed,
    }


def diff_text(changes: dict) -> dict:
    """before / after lines for --diff, one line per VIP, backend and moved ring."""
    before, after = [], []
    for key, (old, new) in sorted(changes["config"].items()):
        if old is not None:
            before.append("config %s: %s" % (key, old))
        after.append("config %s: %s" % (key, new))
    for item in changes["backends_removed"]:
        before.append("backend %s (id %d)" % (item["address"], item["id"]))
    for item in changes["backends_updated"]:
        before.append("backend %s (id %d) mac %s" % (item["address"], item["id"], item["mac"][0]))
        after.append("backend %s (id %d) mac %s" % (item["address"], item["id"], item["mac"][1]))
    for item in changes["backends_added"]:
        after.append("backend %s (id %d) mac %s" % (item["address"], item["id"], item["mac"]))
    for item in changes["vips_removed"]:
        before.append("vip %s (id %d, ring row %d)" % (item["vip"], item["id"], item["ring"]))
    for item in changes["vips_added"]:
        after.append("vip %s (id %d, ring row %d, %s, %d backends)" % (item["vip"], item["id"], item["ring"], item["mode"], item["backends"]))
    for item in changes["vips_changed"]:
        if isinstance(item["mode"], list):
            before.append("vip %s mode %s" % (item["vip"], item["mode"][0]))
            after.append("vip %s mode %s" % (item["vip"], item["mode"][1]))
        if "slots_moved" in item:
            before.append("vip %s ring row %d" % (item["vip"], item["ring"][0]))
            after.append("vip %s ring row %d: %d slots move" % (item["vip"], item["ring"][1], item["slots_moved"]))
            for be in item["backend_changes"]:
                before.append("  backend %s: %d slots" % (be["backend"], be["slots"][0]))
                after.append("  backend %s: %d slots (%s)" % (be["backend"], be["slots"][1], be["change"]))
    return {"before": "".join(line + "\n" for line in before), "after": "".join(line + "\n" for line in after)}


# ---------------------------------------------------------------- applying


def _backend_value(codec: MapCodec, addr: str, mac: str) -> bytes:
    ip = ipaddress.ip_address(addr)
    return codec.encode_value(
        {"family": "ipv%d" % ip.version, "mac": mac, "addr4": addr if ip.version == 4 else "0.0.0.0", "addr6": addr if ip.version == 6 else "::"},
        "backend %s" % addr,
    )


def encode_plan(plan: Plan, dep: Deployment) -> dict:
    """Every key and value the plan writes, encoded before anything is written (CodecError names the entry)."""
    be_codec = dep["lb_backends"].codec
    out = {"backends": [(U32.pack(bid), _backend_value(be_codec, a, mac)) for bid, (a, mac, _kind) in sorted(plan.backend_writes.items())], "vips": {}}
    for vp in plan.vips_added + plan.vips_changed:
        family = vp.vip.address.version
        codec = dep["lb_vips_v%d" % family].codec
        key = vp.live_key or codec.encode_key({"vip": str(vp.vip.address), "port": vp.vip.port, "proto": vp.vip.proto}, "vip %s" % vp.vip.ident)
        value = codec.encode_value({"id": vp.vid, "ring": vp.row, "mode": vp.vip.mode}, "vip %s" % vp.vip.ident)
        out["vips"][vp.vip.ident] = (family, key, value)
    return out


def _write_row(fd: int, row: int, ring_size: int, ring: bytes) -> None:
    base = row * ring_size
    keys = array.array("I", range(base, base + ring_size)).tobytes()
    libbpf.map_update_batch(fd, keys, ring, ring_size)


def apply(plan: Plan, dep: Deployment, ring_size: int, enc: dict = None) -> int:
    """Write the plan in the safe order; returns the number of map updates (batches count one).
    enc: encode_plan's result, when the caller already encoded the plan."""
    if enc is None:
        enc = encode_plan(plan, dep)
    writes = 0
    ring_fd = dep["lb_ring"].fd
    try:
        if plan.config:
            libbpf.map_update(dep["lb_config"].fd, b"\0\0\0\0", plan.config)
            writes += 1
        if enc["backends"]:
            keys = b"".join(k for k, _v in enc["backends"])
            values = b"".join(v for _k, v in enc["backends"])
            libbpf.map_update_batch(dep["lb_backends"].fd, keys, values, len(enc["backends"]))
            writes += 1
        for live in plan.vips_removed:
            libbpf.map_delete(dep["lb_vips_v%d" % live.family].fd, live.key)
            writes += 1
        for vp in plan.vips_added:
            _write_row(ring_fd, vp.row, ring_size, vp.ring)
            family, key, value = enc["vips"][vp.vip.ident]
            libbpf.map_update(dep["lb_vips_v%d" % family].fd, key, value)
            writes += 2
        for vp in plan.vips_changed:
            if vp.ring:
                _write_row(ring_fd, vp.row, ring_size, vp.ring)  # the spare row, not yet referenced
                writes += 1
            family, key, value = enc["vips"][vp.vip.ident]
            libbpf.map_update(dep["lb_vips_v%d" % family].fd, key, value)  # the flip: one update
            writes += 1
        if plan.backend_frees:
            ids = sorted(plan.backend_frees)
            zero = dep["lb_backends"].codec.zero_value
            libbpf.map_update_batch(dep["lb_backends"].fd, b"".join(U32.pack(i) for i in ids), zero * len(ids), len(ids))
            writes += 1
    except libbpf.BpfError as exc:
        raise LbTablesError(
            "writing the load balancer's maps failed after %d updates: %s; the data plane "
            "still uses complete rings (a re-run continues from the maps' state)" % (writes, exc),
            applied=writes,
        )
    return writes


def record(dep: Deployment, state_dir: str, name: str, changed: bool) -> list:
    """Record the tables in the deployment's record folder for the host's restore at boot (map_records.py):
    each map's whole contents, as a sync. Only after a run that wrote, or when a record is missing (a run
    that changes nothing reads no ring it does not need). Returns the maps recorded."""
    if not map_records.recordable(state_dir, name):
        return []
    if not changed and set(map_records.listed(state_dir, name)) >= set(MAPS):
        return []
    with records.locked(state_dir, create=False):
        for map_name in MAPS:
            live = dep[map_name]
            map_records.update(
                state_dir,
                name,
                map_name,
                "sync",
                map_sync.read_current(live.fd, live.codec),
                live.codec.key_size,
                live.codec.value_buf_size,
                live.codec.map_type,
            )
    return list(MAPS)


def summary(plan: Plan) -> list:
    """The VIPs after the run: id, ring row, mode, backends with their ids and weights."""
    out = []
    for vp in sorted(plan.vips_added + plan.vips_changed + plan.vips_kept, key=lambda v: v.vip.ident):
        out.append(
            {
                "vip": str(vp.vip.address),
                "port": vp.vip.port,
                "proto": vp.vip.proto,
                "mode": vp.vip.mode,
                "id": vp.vid,
                "ring": vp.row,
                "backends": [
                    {"address": str(be.address), "id": plan.backend_ids[str(be.address)], "weight": be.weight, "name": be.key} for be in vp.vip.backends
                ],
            }
        )
    return out


def check_config(config) -> dict:
    if not isinstance(config, dict):
        raise maglev.MaglevError("config %r: expected a dict with some of %s" % (config, ", ".join(xdp_lb_entries.CONFIG_FIELDS)))
    xdp_lb_entries.check_fields(config, "config", xdp_lb_entries.CONFIG_FIELDS)
    return config


__all__ = ["CodecError", "Deployment", "LbTablesError", "apply", "describe", "diff_text", "empty_state", "make_plan", "read_state", "summary", "check_config"]
