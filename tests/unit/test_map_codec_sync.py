"""The plan (what to add, change, delete) and the plain-list reader, on bytes only (no kernel)."""

import pytest

from ansible_collections.ebpf.fleet.plugins.module_utils import map_sync
from ansible_collections.ebpf.fleet.plugins.module_utils.map_codec import CodecError, MapCodec

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
    out = map_sync.encode_entries(codec, [{"key": "0x01", "value": "0x02"}, {"0x03": "0x04"}, "0x05"], "entries",
                                  default_value="0x07")
    assert out == {b"\1": b"\2", b"\3": b"\4", b"\5": b"\7"}
    with pytest.raises(CodecError, match=r"entries\[1\]: key '0x01' is given twice"):
        map_sync.encode_entries(codec, ["0x01", "0x01"], "entries", default_value="0x00")
    with pytest.raises(CodecError, match="expected a dict of key: value or a list"):
        map_sync.encode_entries(codec, "0x01", "entries")
