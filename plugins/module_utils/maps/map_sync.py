# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bring a BPF map to a declared content: parse, plan, apply (used by the bpf_map module).

Everything is compared as bytes: the desired entries are encoded once (every
entry is validated before anything is written), the current contents are read
with one batch lookup, and only the entries that go into the report are
decoded back to the operator's notation. Writes and deletes go in batches of
CHUNK elements; a failure reports how many elements were applied, and a
re-run converges because the plan is always computed against what is in the
kernel.

Maps of maps with one slot (BPF_MAP_TYPE_ARRAY_OF_MAPS / HASH_OF_MAPS) hold a
rule set that a program reads as one unit. For them the entries describe the
inner map: a new inner map is created beside the current one (same type,
sizes, flags and BTF types), filled completely, and put into slot 0 with one
update, so a packet sees the whole old set or the whole new set.
"""

from __future__ import annotations

import ctypes
import json
import operator
import os
import sys
import threading
from array import array
from dataclasses import dataclass, field
from itertools import compress, filterfalse, islice, repeat

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_types
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import BATCH_DELETE_MAPS, UNDELETABLE_MAPS, CodecError, MapCodec, read_raw, short, split

CHUNK = 65536
MODES = ("merge", "sync", "absent", "clear")
# the map-type facts live in map_types; these names stay for callers of this module
OUTER_MAPS = map_types.OUTER
SUPPORTED_MAPS = map_types.MANAGED
BATCH_UPDATE_MAPS = map_types.BATCH_UPDATE
# a file of entries nested deeper than this, or whose YAML aliases expand it to more nodes than
# ALIAS_EXPANSION times its own, is refused before it is built (see load_file)
MAX_DEPTH = 64
ALIAS_EXPANSION = 16
ALIAS_SLACK = 100000


class SyncError(FleetError, RuntimeError):
    """A failure with what was already applied (0 when nothing was written)."""

    RESULT_ATTRS = {"applied": "applied"}

    def __init__(self, message: str, applied: int = 0):
        self.applied = applied
        super().__init__(message)


def fd_kind(fd: int) -> str:
    """'map', 'prog', 'link' or '' for a BPF fd, from /proc/self/fdinfo (info by fd cannot tell them apart)."""
    try:
        with open("/proc/self/fdinfo/%d" % fd, encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return ""
    for marker, kind in (("map_type:", "map"), ("prog_type:", "prog"), ("link_type:", "link")):
        if marker in text:
            return kind
    return ""


# ---------------------------------------------------------------- desired contents


class ProgRefs:
    """prog_array values: a program pin path or a program id; compared by id, written as fds."""

    def __init__(self):
        self.fds = {}

    def encode(self, value, where: str) -> bytes:
        if value is None:
            raise CodecError(where, "a program array entry needs a value: a program pin path or id")
        try:
            if isinstance(value, str) and not value.strip().isdigit():
                fd = libbpf.obj_get(value)
            else:
                fd = libbpf.prog_fd_by_id(int(value))
            info = libbpf.prog_info(fd)
        except (libbpf.BpfError, ValueError, TypeError) as exc:
            raise CodecError(where, "%s is not a loaded program (expected a program pin path or id): %s" % (short(value), exc))
        prog_id = info["id"].to_bytes(4, "little")
        if prog_id in self.fds:
            os.close(fd)
        else:
            self.fds[prog_id] = fd
        return prog_id

    def fd_bytes(self, id_bytes: bytes) -> bytes:
        return self.fds[id_bytes].to_bytes(4, "little")

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}


def codec_from_object(obj_path: str, map_name: str, ncpus: int = 0) -> MapCodec:
    """The codec of map map_name as the ELF object at obj_path declares it (for a map of maps: its inner
    map, which the entries describe). Reads the file only; nothing is loaded."""
    from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import btf as btf_mod  # pylint: disable=import-outside-toplevel

    with libbpf.BpfObject.open(obj_path) as obj:
        raw = obj.btf_raw()
    if not raw:
        raise KeyError(map_name)
    info = btf_mod.map_definition(btf_mod.Btf.parse(raw), map_name, libbpf.MAP_TYPE_NAMES)
    if info["type"] in OUTER_MAPS:
        if info["inner"] is None:
            raise KeyError(map_name)
        info = dict(info["inner"], inner_of_outer=True)
    info.update(id=None, btf_id=None)
    return MapCodec.build(info, raw, ncpus)


def _items(entries, where: str):
    """(where, key, value) for a dict of key -> value or a list of {key:, value:} (or bare keys)."""
    if isinstance(entries, dict):
        for key, value in entries.items():
            yield "%s[%s]" % (where, short(key, 80)), key, value
    elif isinstance(entries, list):
        for idx, item in enumerate(entries):
            sub = "%s[%d]" % (where, idx)
            if isinstance(item, dict) and "key" in item and set(item) <= {"key", "value"}:
                yield sub, item["key"], item.get("value")
            elif isinstance(item, dict) and len(item) == 1 and "hex" not in item:
                ((key, value),) = item.items()
                yield sub, key, value
            else:
                yield sub, item, None
    elif entries is not None:
        raise CodecError(where, "expected a dict of key: value or a list of {key:, value:}, got %s %s" % (type(entries).__name__, short(entries, 60)))


iter_entries = _items


def encode_entries(codec: MapCodec, entries, where: str = "entries", default_value=None, keys_only: bool = False, value_encoder=None) -> dict:
    """{key bytes: value bytes} for every entry; the first bad one raises CodecError naming it."""
    out = {}
    enc_key, enc_value = codec.encode_key, (value_encoder or codec.encode_value)
    default = None
    for sub, key, value in _items(entries, where):
        kb = enc_key(key, sub + ".key" if isinstance(entries, list) else sub)
        if kb in out:
            raise CodecError(sub, "key %s is given twice" % short(key))
        if keys_only:
            out[kb] = None
        elif value is None:
            if default is None:
                default = enc_value(default_value, "value")
            out[kb] = default
        else:
            out[kb] = enc_value(value, sub + ".value" if isinstance(entries, list) else sub)
    return out


def read_lines(path: str):
    """(line numbers, keys) of a plain list: one key per line, blank lines and # comments skipped."""
    text = _read_text(path)
    has_comments = "#" in text
    lines = text.splitlines()
    del text
    if has_comments:
        lines = [line.split("#", 1)[0] for line in lines]
    lines = list(map(str.strip, lines))
    if "" not in lines:
        return None, lines
    numbers = [num for num, line in enumerate(lines, 1) if line]
    return numbers, [line for line in lines if line]


def encode_lines(codec: MapCodec, path: str, default_value=None, keys_only: bool = False, value_encoder=None) -> dict:
    """{key bytes: value bytes} for a plain list file; every line gets default_value."""
    value = None if keys_only else (value_encoder or codec.encode_value)(default_value, "value")
    numbers, lines = read_lines(path)

    def where(idx):
        return "%s line %d" % (path, numbers[idx] if numbers else idx + 1)

    keys = codec.encode_keys(lines, where)
    out = dict.fromkeys(keys, value)
    if len(out) != len(keys):
        seen = set()
        for idx, key in enumerate(keys):
            if key in seen:
                raise CodecError(where(idx), "key %s is given twice" % short(lines[idx]))
            seen.add(key)
    return out


MAX_FILE_BYTES = 1 << 30
MAX_SCALAR_CHARS = 1 << 16


def _file_error(path: str, line, message: str) -> CodecError:
    return CodecError("entries_file", "%s%s: %s" % (path, " line %d" % line if line else "", message))


def _read_text(path: str) -> str:
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise _file_error(path, None, "%d bytes; entries files hold at most %d" % (size, MAX_FILE_BYTES))
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CodecError("entries_file", "cannot read %s: %s" % (path, short(str(exc))))


def check_yaml_events(events, path: str) -> None:
    """Refuse, from the parser's events and before any object is built, YAML that is nested deeper than
    MAX_DEPTH, has a scalar longer than MAX_SCALAR_CHARS, or whose aliases expand it to more than
    ALIAS_EXPANSION times its own nodes (an alias bomb): each would exhaust memory or the stack later."""
    import yaml  # pylint: disable=import-outside-toplevel

    sizes = {}  # anchor -> expanded node count
    stack = []  # [expanded node count, anchor] of the open collections
    nodes = expanded = 0
    for event in events:
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([1, event.anchor])
            nodes += 1
            expanded += 1
            if len(stack) > MAX_DEPTH:
                raise _file_error(path, event.start_mark.line + 1, "nested deeper than %d levels" % MAX_DEPTH)
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            count, anchor = stack.pop()
            if anchor:
                sizes[anchor] = count
            if stack:
                stack[-1][0] += count
            continue
        if isinstance(event, yaml.ScalarEvent):
            if len(event.value) > MAX_SCALAR_CHARS:
                raise _file_error(path, event.start_mark.line + 1, "a value of %d characters (at most %d)" % (len(event.value), MAX_SCALAR_CHARS))
            count = 1
            if event.anchor:
                sizes[event.anchor] = 1
            nodes += 1
        elif isinstance(event, yaml.AliasEvent):
            count = sizes.get(event.anchor, 1)
            nodes += 1
        else:
            continue
        expanded += count
        if stack:
            stack[-1][0] += count
        if expanded > ALIAS_EXPANSION * nodes + ALIAS_SLACK:
            raise _file_error(
                path,
                event.start_mark.line + 1,
                "its aliases expand it to more than %d times its own size (%d nodes from %d): write the entries out" % (ALIAS_EXPANSION, expanded, nodes),
            )


def load_file(path: str, fmt: str = "auto"):
    """The entries of a YAML or JSON file, or None for a plain list (format 'lines').

    Hostile files fail fast with a short message naming the file (and the line when known): nesting deeper
    than MAX_DEPTH, YAML alias bombs, files over MAX_FILE_BYTES, YAML scalars over MAX_SCALAR_CHARS."""
    if fmt == "auto":
        ext = os.path.splitext(path)[1].lower()
        fmt = {".json": "json", ".yml": "yaml", ".yaml": "yaml"}.get(ext, "lines")
    if fmt == "lines":
        return None, fmt
    text = _read_text(path)
    if fmt == "json":
        try:
            return json.loads(text), fmt
        except RecursionError:
            raise _file_error(path, None, "nested too deeply to read")
        except ValueError as exc:
            raise _file_error(path, getattr(exc, "lineno", None), "not valid JSON: %s" % short(getattr(exc, "msg", str(exc))))
    try:
        import yaml  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise CodecError("entries_file", "reading YAML needs PyYAML on the host; use a .json file or a plain list")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        check_yaml_events(yaml.parse(text, Loader=loader), path)
        return yaml.load(text, Loader=loader), fmt  # noqa: S506 - a safe loader
    except CodecError:
        raise
    except RecursionError:
        raise _file_error(path, None, "nested too deeply to read")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise _file_error(path, mark.line + 1 if mark is not None else None, "not valid YAML: %s" % short(problem))


# ---------------------------------------------------------------- current contents and the plan


class Reader(threading.Thread):
    """Reads the map's current contents in the background (the syscalls release the GIL), so that
    reading the kernel and encoding the desired entries overlap on two CPUs."""

    def __init__(self, fd: int, codec: MapCodec):
        super().__init__(daemon=True)
        self.fd = fd
        self.codec = codec
        self.raw = None
        self.error = None

    def run(self):
        try:
            self.raw = read_raw(self.fd, self.codec)
        except Exception as exc:  # pylint: disable=broad-except  # re-raised in result()
            self.error = exc

    def result(self):
        """The current contents as read_raw gives them: (keys, values, count); handed over, not kept."""
        self.join()
        if self.error is not None:
            raise self.error
        raw, self.raw = self.raw, None
        return raw


@dataclass
class Plan:
    write: list = field(default_factory=list)  # keys to add or change
    added: list = field(default_factory=list)
    changed: list = field(default_factory=list)
    removed: list = field(default_factory=list)  # keys to delete (or zero, for arrays)
    desired: dict = field(default_factory=dict)
    # the current values of (at least) the changed and removed keys: plan() keeps the whole current
    # contents, plan_raw() only these
    current: dict = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.write and not self.removed


def read_current(fd: int, codec: MapCodec) -> dict:
    """{key bytes: value bytes}; for arrays, all-zero elements count as absent."""
    return current_from_raw(codec, *read_raw(fd, codec))


def current_from_raw(codec: MapCodec, keys: bytes, values: bytes, count: int) -> dict:
    ks, vs = codec.key_size, codec.value_buf_size
    if count and values.count(values[:vs]) == count:
        # every element holds the same value (a plain list's): one bytes object for all of them
        current = dict.fromkeys(split(keys, ks, count), values[:vs])
    else:
        current = dict(zip(split(keys, ks, count), split(values, vs, count)))
    if codec.map_type in UNDELETABLE_MAPS:
        zero = codec.zero_value
        current = {k: v for k, v in current.items() if v != zero}
    return current


def plan(current: dict, desired: dict, mode: str, absent: bytes = None) -> Plan:
    """What to write and delete to bring current to desired.

    absent: for maps whose elements cannot be deleted (arrays), the value an element missing from current
    holds (all zero bytes); a declared element with that value then matches, so an all-zero declaration
    is unchanged, not added on every run."""
    result = Plan(desired=desired, current=current)
    # nothing to do: decided by comparisons that run in C (as are the loops below: map, filter, compress)
    if mode == "absent":
        if not current.keys().isdisjoint(desired.keys()):
            result.removed = list(filter(current.__contains__, desired))
        return result
    if (mode in ("sync", "clear") and current == desired) or (mode == "merge" and desired.items() <= current.items()):
        return result
    result.write = list(compress(desired, map(operator.ne, map(current.get, desired, repeat(absent)), desired.values())))
    if result.write:
        result.added = list(filterfalse(current.__contains__, result.write))
        result.changed = list(filter(current.__contains__, result.write)) if len(result.added) != len(result.write) else []
    if mode in ("sync", "clear"):
        result.removed = list(filterfalse(desired.__contains__, current))
    return result


def plan_raw(codec: MapCodec, raw, desired: dict, mode: str) -> Plan:
    """plan() straight from what read_raw gave, for maps whose elements can be deleted (not arrays): the
    same lists in the same order, without a dict of the current contents (the costly part for a million
    entries).

    Looking a million keys up in a dict of a million others reads memory all over the place; two ways
    avoid most of it. Where every element holds the one declared value (a plain list) and keys are 1, 2,
    4 or 8 bytes, the keys become integers, both sides are sorted and compared as lists, and only the
    differences are looked up (_plan_sorted). Otherwise one pass over the elements read takes each from a
    copy of desired: what is left there is added, what is not found there is removed, and values are
    compared where both sides have the key."""
    if codec.map_type in UNDELETABLE_MAPS or mode not in ("sync", "merge", "clear"):
        return plan(current_from_raw(codec, *raw), desired, mode, absent_value(codec))
    keys, values, count = raw
    if not count:
        added = list(desired)
        return Plan(write=list(added), added=added, desired=desired, current={})
    ks, vs = codec.key_size, codec.value_buf_size
    uniform = _uniform(desired)
    same_values = uniform is not None and values.count(uniform) == count  # every element holds it
    declared_keys = b"".join(desired)
    if keys == declared_keys and (same_values or values == b"".join(desired.values())):
        # the declared entries, read back in the declared order (a trie gives its prefixes back sorted, as a
        # sorted file declares them): nothing to do, found without looking at a single key
        return Plan(desired=desired, current={})
    if same_values and ks in _INT_TYPECODES:
        result = _plan_sorted(keys, declared_keys, ks, count, desired, values[:vs], mode)
        if result is not None:
            return result
    del declared_keys

    def key_at(i):
        return keys[i * ks : i * ks + ks]

    def value_at(i):
        return values[i * vs : i * vs + vs]

    rest = dict(desired)
    # the desired value of every element read, in the kernel's order (_MISSING: not declared)
    wanted = list(map(rest.pop, _pieces(keys, ks, count), repeat(_MISSING, count)))
    added = list(rest)
    del rest
    gone, removed = [], []
    if mode != "merge":
        gone = list(compress(range(count), map(operator.is_, wanted, repeat(_MISSING, count))))
        removed = list(map(key_at, gone))
        if len(frozenset(removed)) != len(removed) or not desired.keys().isdisjoint(removed):
            # a key read twice (the map changed while it was read): decide on the contents as a dict
            return plan(current_from_raw(codec, *raw), desired, mode)
    if same_values:
        differ = []
    else:
        declared = map(operator.is_not, wanted, repeat(_MISSING, count))
        differ = list(compress(range(count), map(operator.and_, declared, map(operator.ne, wanted, _pieces(values, vs, count)))))
    del wanted
    result = Plan(added=added, removed=removed, desired=desired, current=dict(zip(removed, map(value_at, gone))))
    if not differ:
        result.write = list(added)
        return result
    changed = list(map(key_at, differ))
    result.current.update(zip(changed, map(value_at, differ)))
    # in the declared order, as plan() gives them
    changed_set = frozenset(changed)
    result.changed = list(filter(changed_set.__contains__, desired))
    write_set = changed_set.union(added) if added else changed_set
    result.write = list(filter(write_set.__contains__, desired))
    return result


_MISSING = object()
# array typecodes of unsigned integers by size in bytes (keys of these sizes are compared as integers)
_INT_TYPECODES = {array(code).itemsize: code for code in "QLIHB"}


def _int_keys(data: bytes, size: int) -> list:
    """The keys in data (size bytes each) as integers, read big-endian: keys in byte order are then in
    numeric order (a file of sorted addresses or prefixes gives a sorted list, which sorts in one pass)."""
    ints = array(_INT_TYPECODES[size], data)
    if sys.byteorder == "little" and size > 1:
        ints.byteswap()
    return ints.tolist()


def _plan_sorted(keys: bytes, declared_keys: bytes, size: int, count: int, desired: dict, value: bytes, mode: str):
    """plan_raw() for keys of 1, 2, 4 or 8 bytes where every element and every declared entry holds the
    same value: only keys can differ. Sorted integer lists are compared in order (memory read in
    sequence, not at random); None when the map gave a key twice (it changed while it was read).
    declared_keys: the keys of desired, joined."""
    current_ints = _int_keys(keys, size)  # in the kernel's order
    current_sorted = sorted(current_ints)
    desired_ints = _int_keys(declared_keys, size)  # in the declared order
    desired_sorted = sorted(desired_ints)
    result = Plan(desired=desired, current={})
    if current_sorted == desired_sorted:  # desired has no key twice: neither has the map
        return result
    if any(map(operator.eq, current_sorted, islice(current_sorted, 1, None))):
        return None
    gone, new = _sorted_difference(current_sorted, desired_sorted)
    del current_sorted, desired_sorted
    if new:
        new = frozenset(new)
        result.added = list(compress(desired, map(new.__contains__, desired_ints)))
        result.write = list(result.added)
    if gone and mode != "merge":
        gone = frozenset(gone)
        at = compress(range(0, size * count, size), map(gone.__contains__, current_ints))
        result.removed = [keys[i : i + size] for i in at]
        result.current = dict.fromkeys(result.removed, value)
    return result


def _sorted_difference(first: list, second: list):
    """(items only in first, items only in second) of two sorted lists without repeated items. Equal
    runs are skipped by comparing slices, whose length doubles while they match and halves when not."""
    only_first, only_second = [], []
    i = j = 0
    end_first, end_second = len(first), len(second)
    step = 1
    while i < end_first and j < end_second:
        if step > 1:
            if first[i : i + step] == second[j : j + step]:
                i += step
                j += step
                step *= 2
            else:
                step //= 2
            continue
        a, b = first[i], second[j]
        if a == b:
            i += 1
            j += 1
            step = 2
        elif a < b:
            only_first.append(a)
            i += 1
        else:
            only_second.append(b)
            j += 1
    only_first.extend(first[i:])
    only_second.extend(second[j:])
    return only_first, only_second


def _pieces(data: bytes, size: int, count: int):
    """The count pieces of size bytes of data, one at a time (split() without the list)."""
    return map(data.__getitem__, map(slice, range(0, size * count, size), range(size, size * count + size, size)))


def plan_for(codec: MapCodec, current: dict, desired: dict, mode: str) -> Plan:
    """plan() for the map codec describes (arrays: a declared all-zero element matches an unwritten one)."""
    return plan(current, desired, mode, absent_value(codec))


def absent_value(codec: MapCodec):
    """What an element missing from read_current holds: all zero for arrays, None (deleted) otherwise."""
    return codec.zero_value if codec.map_type in UNDELETABLE_MAPS else None


def check_capacity(codec: MapCodec, the_plan: Plan, after: int) -> None:
    """Refuse, before anything is written, a plan that would leave more elements than the map holds
    (LRU maps evict instead, arrays are checked per index)."""
    limit = codec.info["max_entries"]
    if codec.info.get("inner_of_outer") and codec.map_type in GROWABLE_INNER_MAPS:
        return  # a new inner map is made as large as the set (inner_capacity)
    if codec.map_type in map_types.LRU or codec.map_type in map_types.ARRAY or after <= limit:
        return
    raise CodecError(
        "entries",
        "the %s map holds at most %d elements; these entries would leave %d in it "
        "(%d added, %d removed)" % (codec.map_type, limit, after, len(the_plan.added), len(the_plan.removed)),
    )


# ---------------------------------------------------------------- applying


def _chunks(seq: list, size: int):
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def apply(fd: int, codec: MapCodec, the_plan: Plan, progs: ProgRefs = None, chunk: int = CHUNK) -> int:
    """Delete, then write; returns the number of elements applied. Raises SyncError with the count."""
    applied = 0
    map_type = codec.map_type
    try:
        if the_plan.removed:
            if map_type in UNDELETABLE_MAPS:
                zero = codec.zero_value
                for part in _chunks(the_plan.removed, chunk):
                    applied += _update(fd, map_type, part, [zero] * len(part))
            elif map_type in BATCH_DELETE_MAPS:
                for part in _chunks(the_plan.removed, chunk):
                    applied += libbpf.map_delete_batch(fd, b"".join(part), len(part))
            else:
                for key in the_plan.removed:
                    libbpf.map_delete(fd, key)
                    applied += 1
        if the_plan.write:
            desired = the_plan.desired
            uniform = _uniform(desired) if progs is None else None
            for part in _chunks(the_plan.write, chunk):
                values = [uniform] * len(part) if uniform is not None else [desired[k] for k in part]
                if progs is not None:
                    values = [progs.fd_bytes(v) for v in values]
                applied += _update(fd, map_type, part, values)
    except libbpf.BpfError as exc:
        applied += getattr(exc, "applied", 0) or 0
        raise SyncError(
            "%s after %d of %d elements were applied; a re-run continues from the map's state" % (exc, applied, len(the_plan.removed) + len(the_plan.write)),
            applied,
        )
    return applied


def _uniform(desired: dict):
    """The one value every desired entry has (a plain list file), or None."""
    if not desired:
        return None
    first = next(iter(desired.values()))
    # by identity: encode_lines gives every key the same object
    if all(map(operator.is_, desired.values(), repeat(first))):
        return first
    return None


def _update(fd: int, map_type: str, keys: list, values: list) -> int:
    if map_type in BATCH_UPDATE_MAPS:
        return libbpf.map_update_batch(fd, b"".join(keys), b"".join(values), len(keys))
    for key, value in zip(keys, values):
        libbpf.map_update(fd, key, value)
    return len(keys)


# ---------------------------------------------------------------- maps of maps


def inner_map_fd(outer_fd: int, outer_info: dict) -> int:
    """The map in slot 0 of a one-slot outer map."""
    slot = b"\0" * outer_info["key_size"]
    inner_id = libbpf.map_lookup(outer_fd, slot, 4)
    if inner_id is None:
        raise SyncError("outer map %s has no inner map in slot 0: the deployment must install the first one" % outer_info["name"])
    return libbpf.map_fd_by_id(int.from_bytes(inner_id, "little"))


GROWABLE_INNER_MAPS = ("hash", "lpm_trie")


def inner_capacity(info: dict, count: int) -> int:
    """max_entries of a new inner map that must hold count elements: the current size, or, for a hash or LPM trie
    that is too small, the next power of two that holds them (an outer map accepts inner hash and trie maps of any
    size; a rule set from a million-line file outgrows the size its object declares)."""
    size = info["max_entries"]
    if count <= size or info["type"] not in GROWABLE_INNER_MAPS:
        return size
    return 1 << (count - 1).bit_length()


def create_like(info: dict, max_entries: int = 0) -> int:
    """A new empty map with the type, sizes, flags and BTF types of info (libbpf.map_info); max_entries when given."""
    opts = libbpf.MapCreateOpts(sz=ctypes.sizeof(libbpf.MapCreateOpts), map_flags=info["map_flags"])
    btf_fd = -1
    if info.get("btf_id"):
        btf_fd = libbpf.btf_fd_by_id(info["btf_id"])
        opts.btf_fd = btf_fd
        opts.btf_key_type_id = info["btf_key_type_id"]
        opts.btf_value_type_id = info["btf_value_type_id"]
    try:
        ret = libbpf.lib().bpf_map_create(
            libbpf.MAP_TYPE_IDS[info["type"]],
            info["name"].encode()[:15],
            info["key_size"],
            info["value_size"],
            max_entries or info["max_entries"],
            ctypes.byref(opts),
        )
        if ret < 0:
            raise libbpf.BpfError("bpf_map_create", -ret, info["name"])
        return ret
    finally:
        if btf_fd >= 0:
            os.close(btf_fd)


def swap_inner(outer_fd: int, outer_info: dict, codec: MapCodec, desired: dict, chunk: int = CHUNK) -> dict:
    """Fill a new inner map with desired and put it in slot 0 in one update; returns its info."""
    new_fd = create_like(codec.info, inner_capacity(codec.info, len(desired)))
    try:
        full = Plan(write=list(desired), desired=desired)
        try:
            apply(new_fd, codec, full, chunk=chunk)
        except SyncError as exc:
            raise SyncError("filling the new inner map failed, the old one stays in place: %s" % exc, 0)
        slot = b"\0" * outer_info["key_size"]
        libbpf.map_update(outer_fd, slot, new_fd.to_bytes(4, "little"))
        return libbpf.map_info(new_fd)
    finally:
        os.close(new_fd)
