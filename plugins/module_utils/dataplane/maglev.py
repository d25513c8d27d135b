# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Weighted Maglev lookup tables and the flow hash of the XDP load balancer (bpf/xdp_lb.c).

The map entries built from the operator's VIP declarations are in xdp_lb_entries.py.

Every LB host computes the same table for the same input: backends are sorted
by name, their permutations come from hashlib digests (never Python's
``hash()``, which is salted per process), and nothing depends on dict order.

Maglev (Eisenbud et al., NSDI 2016), weighted: backend *i* walks the
permutation ``offset_i, offset_i + skip_i, ...`` modulo the prime table size M
and claims the first free slot it meets. Each round every backend earns its
weight in credit and claims one slot per ``max(weights)`` of credit, so slot
counts follow the weights; a backend of weight 0 claims nothing (draining: its
established flows live on in the connection table).

The data plane picks a slot from a 32-bit flow hash by multiply-shift
(``slot = hash * M >> 32``, no division), with the hash below (``flow_hash``),
which ``xdp_lb`` computes the same way in C (``bpf/include/fleet/hash.h``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError

DEFAULT_RING_SIZE = 65537
MIN_SLOTS_PER_BACKEND = 100
BACKEND_NONE = 0xFFFFFFFF


class MaglevError(FleetError, ValueError):
    """Bad input for a table or an LB declaration; the message names field, value and expectation."""


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def ring_size_for(backends: int, min_slots: int = MIN_SLOTS_PER_BACKEND) -> int:
    """The smallest prime >= DEFAULT_RING_SIZE holding `min_slots` slots per backend."""
    n = max(DEFAULT_RING_SIZE, backends * min_slots)
    while not is_prime(n):
        n += 1
    return n


def _digest(tag: bytes, name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8, person=tag).digest(), "big")


def permutation(name: str, size: int) -> tuple:
    """(offset, skip) of a backend's permutation of the slots, from two independent digests."""
    offset = _digest(b"fleet-mgl-offset", name) % size
    skip = _digest(b"fleet-mgl-skip", name) % (size - 1) + 1
    return offset, skip


def build_table(backends, size: int = DEFAULT_RING_SIZE, min_slots: int = MIN_SLOTS_PER_BACKEND) -> list:
    """The Maglev table for backends [(name, weight), ...]: a list of `size` indexes into `backends`.

    Slots hold the index of the backend in the list as given; the result does not
    depend on the order of the list (only on names and weights). With no backend of
    positive weight every slot holds BACKEND_NONE. The ring must hold at least
    `min_slots` slots per backend (100 keeps the spread within about 1% of the weights).
    """
    if not is_prime(size):
        raise MaglevError("ring size %r: expected a prime number (e.g. 65537)" % (size,))
    names = [entry[0] for entry in backends]
    if len(set(names)) != len(names):
        raise MaglevError("backends: names must be unique, got %r" % (names,))
    for name, weight in backends:
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise MaglevError("backend %r weight %r: expected an integer >= 0" % (name, weight))
    active = sorted((name, weight, idx) for idx, (name, weight) in enumerate(backends) if weight > 0)
    if not active:
        return [BACKEND_NONE] * size
    if size < max(min_slots, 1) * len(active):
        raise MaglevError("ring size %d: expected at least %d slots per backend (%d backends); see ring_size_for()" % (size, min_slots, len(active)))
    count = len(active)
    pos = [0] * count
    skips = [0] * count
    weights = [0] * count
    owner = [0] * count
    for k, (name, weight, idx) in enumerate(active):
        pos[k], skips[k] = permutation(name, size)
        weights[k] = weight
        owner[k] = idx
    return _fill(size, pos, skips, weights, owner)


TAIL_SLOTS = 256


def _fill(size: int, pos: list, skips: list, weights: list, owner: list) -> list:
    """The Maglev walk: in each round every backend earns its weight in credit and, per max(weights) of
    credit, claims the next free slot of its permutation (pos[k], pos[k] + skips[k], ... modulo size).

    The hot loop keeps to locals and skips the credit bookkeeping when all weights are equal. Walking a
    permutation costs about size / free probes per claim, so for the last TAIL_SLOTS free slots each claim
    instead picks, among the free slots, the one its permutation reaches first: the same slot, found in
    O(free) from the step count (slot - pos) * skip^-1 modulo the prime size.
    """
    table = [-1] * size
    count = len(pos)
    equal = min(weights) == max(weights)
    wmax = max(weights)
    credit = [0] * count
    switch = size - min(size, TAIL_SLOTS)
    filled = 0
    k = -1
    while filled < switch:
        for k in range(count):
            if not equal:
                credit[k] += weights[k]
                if credit[k] < wmax:
                    continue
                credit[k] -= wmax
            c = pos[k]
            skip = skips[k]
            while table[c] >= 0:
                c += skip
                if c >= size:
                    c -= size
            table[c] = owner[k]
            c += skip
            pos[k] = c - size if c >= size else c
            filled += 1
            if filled == switch:
                break
        else:
            k = -1
    # the tail: resume with the backend after the last one served
    free = [c for c in range(size) if table[c] < 0]
    inverse = [pow(skip, size - 2, size) for skip in skips]
    start = k + 1
    while free:
        for k in range(start, count):
            if not equal:
                credit[k] += weights[k]
                if credit[k] < wmax:
                    continue
                credit[k] -= wmax
            p, inv = pos[k], inverse[k]
            steps = [(c - p) * inv % size for c in free]
            i = steps.index(min(steps))
            c = free[i]
            free[i] = free[-1]
            free.pop()
            table[c] = owner[k]
            c += skips[k]
            pos[k] = c - size if c >= size else c
            if not free:
                break
        start = 0
    return table


# ---------------------------------------------------------------- flow hash (same as hash.h)

_M32 = 0xFFFFFFFF


def hash_words(words, seed: int = 0) -> int:
    """MurmurHash3 (x86, 32-bit) over whole 32-bit words; length = 4 * len(words) bytes."""
    h = seed
    for k in words:
        k = (k * 0xCC9E2D51) & _M32
        k = ((k << 15) | (k >> 17)) & _M32
        k = (k * 0x1B873593) & _M32
        h ^= k
        h = ((h << 13) | (h >> 19)) & _M32
        h = (h * 5 + 0xE6546B64) & _M32
    h ^= 4 * len(words)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def flow_words(src: str, dst: str, sport: int, dport: int, proto: int) -> list:
    """The words the data plane hashes: addresses as loaded from the packet (little-endian
    loads of network-order bytes), then the two ports as one load, then the protocol."""
    s = ipaddress.ip_address(src).packed
    d = ipaddress.ip_address(dst).packed
    words = list(struct.unpack("<%dI" % (len(s) // 4), s)) + list(struct.unpack("<%dI" % (len(d) // 4), d))
    words.append(struct.unpack("<I", struct.pack(">HH", sport, dport))[0])
    words.append(proto)
    return words


def flow_hash(src: str, dst: str, sport: int, dport: int, proto: int) -> int:
    return hash_words(flow_words(src, dst, sport, dport, proto))


def slot_of(hash_value: int, size: int) -> int:
    """Multiply-shift reduction of a 32-bit hash to a slot (what xdp_lb does)."""
    return (hash_value * size) >> 32
