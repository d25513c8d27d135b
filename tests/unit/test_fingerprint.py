"""The fast re-run's pieces that need no kernel: the controller's declaration digest (plugins/filter/
declaration_digest.py) and the host's fingerprint (host/fingerprint.py) - what each one covers and what it leaves
out. The kernel side (drift of programs and maps) and the playbook are in tests/integration/test_fast_rerun.py."""

import os

import pytest

from ansible_collections.ebpf.fleet.plugins.filter.declaration_digest import collection_digest, declaration_digest
from ansible_collections.ebpf.fleet.plugins.module_utils.host import fingerprint, records


def test_the_digest_is_stable_and_moves_with_the_data_and_the_named_files(tmp_path):
    rules = tmp_path / "rules.txt"
    rules.write_text("192.0.2.0/24 drop\n")
    one = declaration_digest({"b": [1, 2], "a": "x"}, files=[str(rules), ""])
    assert len(one) == 64
    assert declaration_digest({"a": "x", "b": [1, 2]}, files=[str(rules)]) == one  # key order does not matter
    assert declaration_digest({"a": "x", "b": [2, 1]}, files=[str(rules)]) != one
    rules.write_text("192.0.2.0/25 drop\n")
    assert declaration_digest({"b": [1, 2], "a": "x"}, files=[str(rules)]) != one


def test_a_file_it_cannot_read_gives_no_digest_so_the_roles_run(tmp_path):
    assert declaration_digest({}, files=[str(tmp_path / "missing")]) == ""
    assert declaration_digest({}, files=["relative/rules.txt"]) == ""


def test_the_collection_digest_covers_the_roles_and_plugins_but_not_caches(tmp_path):
    for name, text in (("galaxy.yml", "version: 1"), ("roles/r/tasks/main.yml", "- x"), ("plugins/m.py", "a = 1")):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    before = collection_digest(str(tmp_path))
    (tmp_path / "plugins" / "__pycache__").mkdir()
    (tmp_path / "plugins" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text("not a part")
    assert collection_digest(str(tmp_path)) == before
    (tmp_path / "roles" / "r" / "tasks" / "main.yml").write_text("- y")
    assert collection_digest(str(tmp_path)) != before


@pytest.fixture
def state_dir(tmp_path):
    state = str(tmp_path / "state")
    records.write_json(os.path.join(state, "filter", records.RECORD_FILE), {"name": "filter"})
    records.write_json(os.path.join(state, ".hooks", "xdp@eth0.json"), {"entries": []})
    return state


def test_the_records_digest_covers_records_and_hooks_but_not_the_checkpoint_or_the_history(state_dir):
    before = fingerprint.records_digest(state_dir)
    for folder in (".checkpoint", ".history/filter/1"):
        records.write_json(os.path.join(state_dir, folder, "x.json"), {"a": 1})
    fingerprint.write(state_dir, {"version": 1})
    assert fingerprint.records_digest(state_dir) == before
    records.write_json(os.path.join(state_dir, ".hooks", "xdp@eth0.json"), {"entries": [1]})
    assert fingerprint.records_digest(state_dir) != before


def test_check_names_the_first_thing_that_moved(state_dir, tmp_path):
    installed = tmp_path / "unit.timer"
    installed.write_text("[Timer]\n")
    digest = "ab" * 32
    assert "no fingerprint is recorded" in fingerprint.check(state_dir, "/sys/fs/bpf/x", digest, None)[0]
    rec = fingerprint.build(state_dir, digest, [str(installed)], [])
    rec["deployments"] = []  # no kernel here: the drift of deployments is the integration tests' part
    fingerprint.write(state_dir, rec)
    assert fingerprint.read(state_dir)["files"] == {str(installed): fingerprint.file_sha256(str(installed))}
    assert fingerprint.check(state_dir, "/sys/fs/bpf/x", digest, None) == []
    assert "declaration changed" in fingerprint.check(state_dir, "/sys/fs/bpf/x", "cd" * 32, None)[0]
    assert "checkpoint is pending" in fingerprint.check(state_dir, "/sys/fs/bpf/x", digest, {"token": "t"})[0]
    installed.write_text("[Timer]\nOnCalendar=daily\n")
    assert fingerprint.check(state_dir, "/sys/fs/bpf/x", digest, None) == ["file %s changed" % installed]
    installed.unlink()
    assert fingerprint.check(state_dir, "/sys/fs/bpf/x", digest, None) == ["file %s is missing" % installed]
    records.write_json(os.path.join(state_dir, "filter", records.RECORD_FILE), {"name": "filter", "version": 2})
    assert "deployment records" in fingerprint.check(state_dir, "/sys/fs/bpf/x", digest, None)[0]


def test_an_unreadable_or_foreign_fingerprint_is_no_fingerprint(state_dir):
    os.makedirs(state_dir, exist_ok=True)
    with open(fingerprint.path(state_dir), "w", encoding="utf-8") as handle:
        handle.write("{not json")
    assert fingerprint.read(state_dir) is None
    fingerprint.write(state_dir, {"version": 99, "digest": "ab" * 32})
    assert fingerprint.read(state_dir) is None
    assert fingerprint.remove(state_dir) and not fingerprint.remove(state_dir)
