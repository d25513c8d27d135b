"""The plan (what to add, change, delete) and the plain-list reader, on bytes only (no kernel)."""

import random

import pytest

from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_sync
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import CodecError, MapCodec

CUR = {b"a": b"1", b"b": b"2", b"c": b"3"}


def test_merge_adds_and_changes_only():
    plan = map_sync.plan(dict(CUR), {b"a": b"1", b"b": b"9", b"d": b"4"}, "merge")
    assert plan.added == [b"d"] and plan.changed == [b"b"] and plan.removed == []


def test_sync_also_removes_the_rest():
    plan = map_sync.plan(dict(CUR), {b"a": b"1", b"d": b"4"}, "sync")
    assert plan.added == [b"d"] and sorted(plan.removed) == [b"b", b"c"]


def test_absent_removes_only_present_keys():
    plan = map_sync.plan(dict(CUR), {b"a": None, b"z": None}, "absent")
    assert plan.removed == [b"a"] and plan.write == []


@pytest.mark.parametrize("mode, desired", [("merge", {b"a": b"1"}), ("sync", CUR), ("absent", {b"z": None})])
def test_nothing_to_do_is_an_empty_plan(mode, desired):
    assert map_sync.plan(dict(CUR), dict(desired), mode).empty


def test_plain_list_skips_comments_and_blanks_and_names_bad_lines(tmp_path):
    codec = MapCodec.build({"type": "hash", "key_size": 4, "value_size": 1, "max_entries": 8})
    good = tmp_path / "l.txt"
    good.write_text("# head\n0x0a000001\n\n0x0a000002  # two\n")
    assert map_sync.encode_lines(codec, str(good), "0x01") == {b"\n\0\0\1": b"\1", b"\n\0\0\2": b"\1"}
    bad = tmp_path / "b.txt"
    bad.write_text("0x0a000001\n\n0x0a0000\n")
    with pytest.raises(CodecError, match="b.txt line 3: .*expected 4 bytes"):
        map_sync.encode_lines(codec, str(bad), "0x01")
    dup = tmp_path / "d.txt"
    dup.write_text("0x0a000001\n0x0A000001\n")
    with pytest.raises(CodecError, match="d.txt line 2: key '0x0A000001' is given twice"):
        map_sync.encode_lines(codec, str(dup), "0x01")


def test_entries_list_forms_and_duplicates():
    codec = MapCodec.build({"type": "hash", "key_size": 1, "value_size": 1, "max_entries": 8})
    out = map_sync.encode_entries(codec, [{"key": "0x01", "value": "0x02"}, {"0x03": "0x04"}, "0x05"], "entries", default_value="0x07")
    assert out == {b"\1": b"\2", b"\3": b"\4", b"\5": b"\7"}
    with pytest.raises(CodecError, match=r"entries\[1\]: key '0x01' is given twice"):
        map_sync.encode_entries(codec, ["0x01", "0x01"], "entries", default_value="0x00")
    with pytest.raises(CodecError, match="expected a dict of key: value or a list"):
        map_sync.encode_entries(codec, "0x01", "entries")


def test_plan_of_an_array_counts_a_declared_zero_element_as_unchanged():
    zero = b"\0\0"
    current = {b"1": b"\1\0"}  # arrays: only non-zero elements are read as present
    plan = map_sync.plan(dict(current), {b"0": zero, b"1": b"\1\0"}, "sync", zero)
    assert plan.empty
    plan = map_sync.plan(dict(current), {b"0": zero, b"1": zero, b"2": b"\2\0"}, "sync", zero)
    assert plan.added == [b"2"] and plan.changed == [b"1"] and plan.removed == []


def _raw(current: dict):
    """current as read_raw gives it: (keys, values, count)."""
    return b"".join(current), b"".join(current.values()), len(current)


def _same_plan(codec, current: dict, desired: dict, mode: str):
    """plan_raw on the bytes read gives what plan gives on the dict of the current contents."""
    raw = _raw(current)
    want = map_sync.plan(map_sync.current_from_raw(codec, *raw), desired, mode, map_sync.absent_value(codec))
    got = map_sync.plan_raw(codec, raw, desired, mode)
    assert (got.write, got.added, got.changed, got.removed) == (want.write, want.added, want.changed, want.removed)
    for key in got.changed + got.removed:
        assert got.current[key] == want.current[key]
    return got


@pytest.mark.parametrize("map_type", ["hash", "lpm_trie", "percpu_hash", "lru_hash", "array"])
@pytest.mark.parametrize("mode", ["sync", "merge", "clear", "absent"])
@pytest.mark.parametrize("uniform", [True, False])
def test_plan_from_the_bytes_read_equals_the_plan_from_the_current_dict(map_type, mode, uniform):
    codec = MapCodec.build({"type": map_type, "key_size": 2, "value_size": 2, "max_entries": 64}, ncpus=2)
    size = codec.value_buf_size
    rng = random.Random("%s %s %s" % (map_type, mode, uniform))
    keys = [bytes([i, 0]) for i in range(24)]
    values = [bytes([i]) * size for i in range(3)]
    for _round in range(200):
        current = {key: rng.choice(values) for key in rng.sample(keys, rng.randint(0, 16))}
        declared = rng.sample(keys, rng.randint(0, 16))
        if mode == "absent":
            desired = dict.fromkeys(declared)
        elif mode == "clear":
            desired = {}
        elif uniform:
            desired = dict.fromkeys(declared, bytes(rng.choice(values)))  # one object, as a plain list gives
        else:
            desired = {key: rng.choice(values) for key in declared}
        if codec.map_type == "array":
            current = {k: v for k, v in current.items() if v != codec.zero_value}
        _same_plan(codec, current, desired, mode)


@pytest.mark.parametrize("key_size", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("mode", ["sync", "merge"])
def test_plan_from_the_bytes_read_of_a_plain_list_equals_the_plan_from_the_current_dict(key_size, mode):
    # one value for every entry, as a plain list gives: keys of 1, 2, 4 and 8 bytes are compared as sorted
    # integers; the lists, their order and the values reported must still be those of the dict path
    codec = MapCodec.build({"type": "hash", "key_size": key_size, "value_size": 4, "max_entries": 1 << 16})
    rng = random.Random("%d %s" % (key_size, mode))
    value = b"\1\0\0\0"
    for size, share in [(200, 0.0), (200, 0.01), (3000, 0.01), (3000, 0.3), (3000, 1.0)]:
        keys = list({rng.getrandbits(8 * key_size).to_bytes(key_size, "big") for _draw in range(2 * size)})
        current = rng.sample(keys, len(keys) // 2)
        declared = [key for key in current if rng.random() >= share] + rng.sample(keys, int(len(keys) * share / 2))
        declared = list(dict.fromkeys(declared))
        if rng.random() < 0.5:
            declared.sort()  # a sorted file
        _same_plan(codec, dict.fromkeys(current, value), dict.fromkeys(declared, bytes(value)), mode)


def test_plan_from_the_bytes_read_of_a_sync_from_empty_and_of_a_no_op():
    codec = MapCodec.build({"type": "hash", "key_size": 1, "value_size": 1, "max_entries": 8})
    desired = dict.fromkeys([b"a", b"b", b"c"], b"1")
    plan = _same_plan(codec, {}, desired, "sync")
    assert plan.added == plan.write == [b"a", b"b", b"c"] and not plan.removed
    assert _same_plan(codec, {b"c": b"1", b"a": b"1", b"b": b"1"}, desired, "sync").empty
    # read back in the declared order (a trie and a sorted file): the same keys, the values still compared
    assert _same_plan(codec, dict(desired), desired, "sync").empty
    assert _same_plan(codec, {b"a": b"1", b"b": b"2", b"c": b"3"}, {b"a": b"1", b"b": b"2", b"c": b"3"}, "sync").empty
    plan = _same_plan(codec, {b"a": b"1", b"b": b"2", b"c": b"3"}, {b"a": b"1", b"b": b"9", b"c": b"3"}, "merge")
    assert plan.changed == plan.write == [b"b"] and plan.current[b"b"] == b"2"


@pytest.mark.parametrize("values", [b"1231", b"1111"])
def test_plan_from_the_bytes_read_with_a_key_read_twice_counts_it_once(values):
    # a map changed while it was read can give a key twice; the plan is the one of the dict path
    codec = MapCodec.build({"type": "lpm_trie", "key_size": 1, "value_size": 1, "max_entries": 8})
    raw = (b"abca", values, 4)
    desired = dict.fromkeys([b"a", b"d"], b"1")
    plan = map_sync.plan_raw(codec, raw, desired, "sync")
    assert plan.added == [b"d"] and plan.removed == [b"b", b"c"] and plan.changed == []


# ---------------------------------------------------------------- hostile files


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("deep.json", "[" * 200000 + "]" * 200000, "deep.json: nested too deeply to read"),
        ("deep.yml", "[" * 100000 + "]" * 100000, "deep.yml line 1: nested deeper than 64 levels"),
        ("deep_block.yml", "".join("%s- \n" % ("  " * i) for i in range(100)), "deep_block.yml line 65: nested deeper than 64 levels"),
        (
            "bomb.yml",
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join("%s: &%s [%s]\n" % (chr(98 + i), chr(98 + i), ", ".join(["*" + chr(97 + i)] * 10)) for i in range(8)),
            "bomb.yml line 5: its aliases expand it to more than 16 times its own size",
        ),
        ("long.yml", "- " + "x" * 100000 + "\n", "long.yml line 1: a value of 100000 characters"),
        ("bad.json", '{"a": 1,\n "b": }', "bad.json line 2: not valid JSON"),
        ("bad.yml", "a: [1, 2\nb: 3\n", "bad.yml line 2: not valid YAML"),
    ],
)
def test_hostile_entries_files_fail_fast_with_a_short_message_naming_the_file(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CodecError) as err:
        map_sync.load_file(str(path))
    assert message in str(err.value)
    assert len(str(err.value)) < 500


def test_yaml_aliases_that_reuse_a_value_are_fine(tmp_path):
    path = tmp_path / "ok.yml"
    path.write_text("- {key: 1, value: &v {weight: 1, name: web}}\n" + "".join("- {key: %d, value: *v}\n" % i for i in range(2, 2000)))
    data, fmt = map_sync.load_file(str(path))
    assert fmt == "yaml" and len(data) == 1999 and data[-1]["value"] == {"weight": 1, "name": "web"}


def test_plan_for_an_array_codec_matches_declared_zero_elements():
    codec = MapCodec.build({"type": "array", "key_size": 4, "value_size": 2, "max_entries": 4})
    zero_key, one_key = codec.encode_key(0), codec.encode_key(1)
    desired = {zero_key: codec.encode_value(0), one_key: codec.encode_value(7)}
    assert map_sync.plan_for(codec, {one_key: codec.encode_value(7)}, desired, "sync").empty
    assert not map_sync.plan({one_key: codec.encode_value(7)}, desired, "sync").empty  # the old call, unaware


@pytest.mark.parametrize(
    "info, count, size",
    [
        ({"type": "hash", "max_entries": 262144}, 1000, 262144),  # fits: the declared size
        ({"type": "hash", "max_entries": 262144}, 262144, 262144),
        ({"type": "hash", "max_entries": 262144}, 1065794, 2097152),  # a million-line rule set: grows
        ({"type": "lpm_trie", "max_entries": 262144}, 300000, 524288),
        ({"type": "array", "max_entries": 65536}, 70000, 65536),  # arrays keep their size
    ],
)
def test_a_new_inner_map_grows_to_hold_a_larger_rule_set(info, count, size):
    assert map_sync.inner_capacity(info, count) == size
