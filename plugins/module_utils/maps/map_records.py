# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The declared contents of a deployment's maps, recorded on the host so that it can restore them.

bpf_map records what the operator declared (never what the programs wrote: counters and connection
tables are not declared, so they are never recorded) in the deployment's record folder:

    <state_dir>/<name>/maps/<map>.entries

The file holds the entries as the bytes the kernel stores, not the operator's notation: restoring then needs
no parsing, no BTF and no codec, and a million entries are written and read in a fraction of a second.
Layout: one JSON header line, then every key, then every value (or one value when all are the same, as for a
plain list of CIDRs):

    {"format": 1, "map": ..., "exact": true, "count": n, "key_size": k, "value_size": v, "uniform": false, ...}
    key_0 ... key_n-1 value_0 ... value_n-1

exact: the map holds exactly these entries (the last sync, or merges onto a sync); restoring then removes
what is not recorded. Otherwise (only merges seen) restoring adds and updates the recorded entries only.
Files are written to a temporary name and renamed (records._atomic_write), so a reader sees the old record
or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
from dataclasses import dataclass, field
from itertools import repeat

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError
from ansible_collections.ebpf.fleet.plugins.module_utils.host import records
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_types

FORMAT = 1
SUFFIX = ".entries"
MAPS_FOLDER = "maps"
# map types whose values are references the kernel gives out at run time (program and map fds, interface
# indexes): recorded as bytes they would mean something else after a reboot, so they are not recorded
NOT_RECORDED = map_types.FD_VALUE | map_types.DEVICE


class MapRecordError(FleetError, ValueError):
    """A recorded map declaration that cannot be read or does not fit the map."""


@dataclass
class Declared:
    """One map's recorded declaration: {key bytes: value bytes} and whether it is the map's whole contents."""

    map: str
    entries: dict = field(default_factory=dict)
    exact: bool = True
    key_size: int = 0
    value_size: int = 0  # bytes per value as the kernel reads and writes it (per-CPU: every CPU's)
    map_type: str = ""
    outer: bool = False  # the entries of the inner map of a one-slot map of maps


def folder(state_dir: str, name: str) -> str:
    return os.path.join(records.deployment_dir(state_dir, name), MAPS_FOLDER)


def path_of(state_dir: str, name: str, map_name: str) -> str:
    return os.path.join(folder(state_dir, name), map_name + SUFFIX)


def recordable(state_dir: str, name: str) -> bool:
    """Declarations are recorded for deployments with a record only (the ones a host can restore)."""
    return bool(name) and os.path.isfile(os.path.join(records.deployment_dir(state_dir, name), records.RECORD_FILE))


def listed(state_dir: str, name: str) -> list:
    path = folder(state_dir, name)
    if not os.path.isdir(path):
        return []
    return sorted(entry[: -len(SUFFIX)] for entry in os.listdir(path) if entry.endswith(SUFFIX) and not entry.startswith("."))


def _uniform(entries: dict):
    if not entries:
        return None
    first = next(iter(entries.values()))
    values = entries.values()
    if all(map(operator.is_, values, repeat(first))) or all(map(operator.eq, values, repeat(first))):
        return first
    return None


def encode(decl: Declared) -> bytes:
    uniform = _uniform(decl.entries)
    values = uniform if uniform is not None else b"".join(decl.entries.values())
    body = b"".join(decl.entries) + values
    header = {
        "format": FORMAT,
        "map": decl.map,
        "exact": decl.exact,
        "count": len(decl.entries),
        "key_size": decl.key_size,
        "value_size": decl.value_size,
        "map_type": decl.map_type,
        "outer": decl.outer,
        "uniform": uniform is not None,
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    return json.dumps(header, sort_keys=True).encode() + b"\n" + body


def decode(data: bytes, where: str) -> Declared:
    line, _sep, body = data.partition(b"\n")
    try:
        header = json.loads(line)
        count, ks, vs = int(header["count"]), int(header["key_size"]), int(header["value_size"])
        if header.get("format") != FORMAT:
            raise ValueError("format %r, expected %d" % (header.get("format"), FORMAT))
    except (ValueError, KeyError, TypeError) as exc:
        raise MapRecordError(
            "%s: not a map record written by ebpf.fleet (%s); re-run the bpf_map task that declares this map, or remove the file" % (where, exc),
            field="state_dir",
            value=where,
        )
    size = ks * count + (vs if header.get("uniform") and count else vs * count)
    if len(body) != size or hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise MapRecordError(
            "%s: truncated or damaged (%d bytes of entries, expected %d, or a checksum mismatch); "
            "re-run the bpf_map task that declares this map" % (where, len(body), size),
            field="state_dir",
            value=where,
        )
    keys = [body[i : i + ks] for i in range(0, ks * count, ks)]
    values = body[ks * count :]
    if header.get("uniform"):
        entries = dict.fromkeys(keys, values)
    else:
        entries = dict(zip(keys, [values[i : i + vs] for i in range(0, vs * count, vs)]))
    return Declared(
        map=header.get("map", ""),
        entries=entries,
        exact=bool(header.get("exact")),
        key_size=ks,
        value_size=vs,
        map_type=header.get("map_type", ""),
        outer=bool(header.get("outer")),
    )


def read(state_dir: str, name: str, map_name: str):
    """The recorded declaration of a map, or None."""
    path = path_of(state_dir, name, map_name)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    return decode(data, path)


def count(state_dir: str, name: str, map_name: str):
    """The number of recorded entries, from the header line alone (None: no record, or not readable)."""
    try:
        with open(path_of(state_dir, name, map_name), "rb") as handle:
            return int(json.loads(handle.readline())["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(state_dir: str, name: str, decl: Declared) -> bool:
    """Write the record (temp file + rename); False when the file already holds exactly this."""
    path = path_of(state_dir, name, decl.map)
    data = encode(decl)
    # the header holds the body's checksum: an equal header line is an equal file (read() checks the body)
    header = data[: data.index(b"\n") + 1]
    try:
        with open(path, "rb") as handle:
            if handle.readline() == header and os.fstat(handle.fileno()).st_size == len(data):
                return False
    except OSError:
        pass
    records.write_file(path, data)
    return True


def remove(state_dir: str, name: str, map_name: str) -> bool:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path_of(state_dir, name, map_name))
        return True
    return False


def update(state_dir: str, name: str, map_name: str, mode: str, desired: dict, key_size: int, value_size: int, map_type: str, outer: bool = False):
    """Fold one successful bpf_map run into the record: sync replaces the set, merge adds to it, absent
    removes its keys, clear forgets the map (nothing declared). Returns the record's path, or None when
    nothing is recorded for this map."""
    if map_type in NOT_RECORDED or not recordable(state_dir, name):
        return None
    if mode == "clear":
        remove(state_dir, name, map_name)
        return None
    old = read_lenient(state_dir, name, map_name, key_size, value_size) if mode != "sync" else None
    if mode == "sync":
        decl = Declared(map=map_name, entries=desired, exact=True)
    elif mode == "merge":
        decl = Declared(map=map_name, entries=dict(old.entries) if old else {}, exact=old.exact if old else False)
        decl.entries.update(desired)
    else:  # absent
        if old is None:
            return None
        decl = Declared(map=map_name, entries={k: v for k, v in old.entries.items() if k not in desired}, exact=old.exact)
        if not decl.entries and not decl.exact:
            remove(state_dir, name, map_name)
            return None
    decl.key_size, decl.value_size, decl.map_type, decl.outer = key_size, value_size, map_type, outer
    write(state_dir, name, decl)
    return path_of(state_dir, name, map_name)


def read_lenient(state_dir: str, name: str, map_name: str, key_size: int, value_size: int):
    """The old record when it fits the map's sizes (a replaced, incompatible map starts a new record)."""
    try:
        old = read(state_dir, name, map_name)
    except MapRecordError:
        return None
    if old is None or (old.key_size, old.value_size) != (key_size, value_size):
        return None
    return old
