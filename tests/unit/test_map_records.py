"""The recorded declarations of maps (map_records.py) and the host command's pieces that need no kernel:
how each bpf_map mode folds into the record, the file format and its damage checks, the metrics text as
Prometheus parses it, and that the host command imports no Ansible."""

import os
import subprocess
import sys

import pytest
from harness import paths

from ansible_collections.ebpf.fleet.plugins.module_utils.host import metrics, records
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_records


@pytest.fixture
def deployed(tmp_path):
    """A state_dir with a record for deployment 'filter' (declarations are recorded for recorded deployments)."""
    state_dir = str(tmp_path / "state")
    records.write_json(os.path.join(state_dir, "filter", records.RECORD_FILE), {"name": "filter"})
    return state_dir


def k(n):
    return n.to_bytes(4, "little")


def update(state_dir, mode, entries, name="filter", map_type="hash"):
    return map_records.update(state_dir, name, "rules", mode, entries, 4, 4, map_type)


def test_sync_replaces_merge_adds_absent_removes_and_clear_forgets(deployed):
    update(deployed, "sync", {k(1): k(10), k(2): k(20)})
    update(deployed, "merge", {k(3): k(30), k(1): k(11)})
    update(deployed, "absent", {k(2): None})
    decl = map_records.read(deployed, "filter", "rules")
    assert decl.entries == {k(1): k(11), k(3): k(30)} and decl.exact
    update(deployed, "sync", {k(9): k(90)})
    assert map_records.read(deployed, "filter", "rules").entries == {k(9): k(90)}
    assert update(deployed, "clear", {}) is None
    assert map_records.read(deployed, "filter", "rules") is None


def test_merges_alone_are_not_exact_and_an_empty_merged_set_is_forgotten(deployed):
    update(deployed, "merge", {k(1): k(10)})
    assert not map_records.read(deployed, "filter", "rules").exact
    update(deployed, "absent", {k(1): None})
    assert map_records.listed(deployed, "filter") == []
    assert update(deployed, "absent", {k(5): None}) is None


def test_nothing_is_recorded_without_a_deployment_record_or_for_maps_of_kernel_references(deployed):
    assert update(deployed, "sync", {k(1): k(2)}, name="other") is None
    assert not os.path.exists(os.path.join(deployed, "other"))
    for kind in ("prog_array", "devmap", "array_of_maps"):
        assert update(deployed, "sync", {k(1): k(2)}, map_type=kind) is None
    assert map_records.listed(deployed, "filter") == []


def test_a_uniform_set_stores_its_value_once_and_reads_back_equal(deployed):
    value = k(1)
    entries = {n.to_bytes(8, "little"): value for n in range(1000)}
    map_records.update(deployed, "filter", "deny", "sync", entries, 8, 4, "lpm_trie")
    path = map_records.path_of(deployed, "filter", "deny")
    assert os.path.getsize(path) < 8 * 1000 + 4 + 400  # keys, one value, the header
    assert map_records.read(deployed, "filter", "deny").entries == entries
    mtime = os.stat(path).st_mtime_ns
    assert not map_records.write(deployed, "filter", map_records.read(deployed, "filter", "deny"))
    assert os.stat(path).st_mtime_ns == mtime  # the same declaration rewrites nothing


@pytest.mark.parametrize("damage", ["truncate", "flip", "header"])
def test_a_damaged_record_is_refused_with_its_path(deployed, damage):
    update(deployed, "sync", {k(1): k(10), k(2): k(20)})
    path = map_records.path_of(deployed, "filter", "rules")
    data = open(path, "rb").read()
    data = {"truncate": data[:-1], "flip": data[:-1] + bytes([data[-1] ^ 1]), "header": b"{oops\n" + data}[damage]
    with open(path, "wb") as handle:
        handle.write(data)
    with pytest.raises(map_records.MapRecordError, match="rules.entries"):
        map_records.read(deployed, "filter", "rules")
    # bpf_map starts a new record rather than failing on the old one
    update(deployed, "merge", {k(3): k(30)})
    assert map_records.read(deployed, "filter", "rules").entries == {k(3): k(30)}


def test_a_record_of_other_sizes_is_not_merged_into(deployed):
    update(deployed, "sync", {k(1): k(10)})
    map_records.update(deployed, "filter", "rules", "merge", {b"\0" * 8: k(1)}, 8, 4, "hash")
    decl = map_records.read(deployed, "filter", "rules")
    assert decl.entries == {b"\0" * 8: k(1)} and decl.key_size == 8 and not decl.exact


def test_metrics_text_escapes_labels_and_parses_as_prometheus_text():
    parser = pytest.importorskip("prometheus_client.parser")
    samples = [
        metrics.sample("ebpf_fleet_in_sync", {"deployment": 'we"ird\\name\n', "interface": "eth0", "hook": "xdp"}, 1),
        metrics.sample("ebpf_fleet_packets_total", {"deployment": "f", "map": "filter_stats", "counter": "port_drop"}, 12),
        metrics.sample("ebpf_fleet_bytes_total", {"deployment": "f", "map": "filter_stats", "counter": "port_drop"}, 1200),
    ]
    families = {f.name: f for f in parser.text_string_to_metric_families(metrics.render(samples))}
    assert families["ebpf_fleet_in_sync"].samples[0].labels["deployment"] == 'we"ird\\name\n'
    assert families["ebpf_fleet_packets"].type == "counter"
    assert families["ebpf_fleet_packets"].samples[0].value == 12
    assert families["ebpf_fleet_bytes"].samples[0].labels == {"deployment": "f", "map": "filter_stats", "counter": "port_drop"}


def test_the_host_command_imports_no_ansible():
    code = (
        "import sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ansible' or name.startswith('ansible.'):\n"
        "            raise ImportError('the host command imported ' + name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "from ansible_collections.ebpf.fleet.plugins.module_utils.host import metrics, restore\n"
        "try:\n"
        "    restore.main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    sys.exit(exc.code)\n"
    )
    env = dict(os.environ, PYTHONPATH=paths.COLLECTIONS)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "restore" in proc.stdout and "metrics" in proc.stdout


def test_count_reads_the_number_of_entries_from_the_header_alone(deployed):
    state_dir = deployed
    decl = map_records.Declared(
        map="filter_v4", entries={b"\x01\x00\x00\x00": b"\x02", b"\x03\x00\x00\x00": b"\x02"}, key_size=4, value_size=1, map_type="hash"
    )
    map_records.write(state_dir, "filter", decl)
    assert map_records.count(state_dir, "filter", "filter_v4") == 2
    assert map_records.count(state_dir, "filter", "missing") is None
    # the metrics timer leaves out maps with more entries than it checks (drift.maps max_entries)
    from ansible_collections.ebpf.fleet.plugins.module_utils.host import drift

    assert drift.maps(state_dir, "filter", "/sys/fs/bpf/ebpf_fleet_unused", max_entries=1) == []
