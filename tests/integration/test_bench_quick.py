"""The quick form of `make bench` (BENCH_QUICK=1): every benchmark in tests/bench/ runs with small sizes and few
rounds, writes its JSON, and scripts/bench_report.py turns them into a report with plots. Asserts only that the
results and the report are produced and well-formed, never a timing (the benchmarks cannot rot unnoticed)."""

import glob
import json
import os
import subprocess
import sys

import pytest
from harness import paths

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

BENCHES = sorted(glob.glob(os.path.join(paths.REPO, "tests", "bench", "bench_*.py")))
REPORT = os.path.join(paths.REPO, "scripts", "bench_report.py")


def _load_report_module():
    sys.path.insert(0, os.path.dirname(REPORT))
    try:
        import bench_report  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.pop(0)
    return bench_report


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Every benchmark once in its quick form, results in a temporary directory; then the report."""
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, BENCH_QUICK="1", BENCH_OUT=str(out))
    for bench in BENCHES:
        # generous: the fleet rollout's quick form runs deploy_xdp.yml twice, minutes on a loaded machine
        proc = subprocess.run([sys.executable, bench], env=env, cwd=paths.REPO, capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, "%s failed:\n%s\n%s" % (bench, proc.stdout[-3000:], proc.stderr[-3000:])
    report = out / "performance.md"
    proc = subprocess.run(
        [sys.executable, REPORT, "--in", str(out), "--out", str(report)], cwd=paths.REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, report


def test_every_benchmark_writes_well_formed_json(quick_run):
    out, _report = quick_run
    names = {os.path.splitext(os.path.basename(path))[0] for path in glob.glob(str(out / "*.json"))}
    assert names == {"dataplane_filter", "dataplane_lb", "real_frames", "maps", "map_records", "lb_deploy", "fleet_rollout"}
    bench_report = _load_report_module()
    for path in glob.glob(str(out / "*.json")):
        with open(path) as handle:
            data = json.load(handle)
        bench_report.check(data, path)  # raises on a schema violation
        assert data["quick"] is True
        assert data["tables"] and all(table["rows"] for table in data["tables"]), path
        for table in data["tables"]:
            for row in table["rows"]:
                assert row["includes"].keys() >= {"method", "packet", "path", "encapsulation"}, row["name"]
                assert row["rounds"] == len(row["samples"]) >= 1


def test_data_plane_rows_run_on_more_than_one_cpu(quick_run):
    out, _report = quick_run
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU allowed")
    for name in ("dataplane_filter", "dataplane_lb"):
        with open(out / ("%s.json" % name)) as handle:
            data = json.load(handle)
        for table in data["tables"]:
            for row in table["rows"]:
                assert len(row["params"]["cpus"]) > 1, (name, row["name"])


def test_data_plane_rows_carry_floors_and_targets(quick_run):
    out, _report = quick_run
    with open(out / "dataplane_lb.json") as handle:
        lb = json.load(handle)
    rows = lb["tables"][0]["rows"]
    assert all("floor" in row and "above" in row for row in rows)
    paths_seen = {row["includes"]["path"] for row in rows}
    assert {"established", "SYN", "non-VIP", "new flow, table partly filled", "new flow, table full"} <= paths_seen
    with open(out / "dataplane_filter.json") as handle:
        flt = json.load(handle)
    scaling = [t for t in flt["tables"] if t["key"] == "filter_scaling"][0]["rows"]
    assert {row["params"]["family"] for row in scaling} == {"IPv4", "IPv6"}
    assert {row["includes"]["path"] for row in scaling} >= {"allow", "exact source deny", "prefix deny", "port deny"}
    assert all(isinstance(t["met"], bool) for row in scaling for t in row["targets"])


def test_real_frames_and_fleet_rows_carry_their_comparisons(quick_run):
    out, _report = quick_run
    with open(out / "real_frames.json") as handle:
        frames = {table["key"]: table["rows"] for table in json.load(handle)["tables"]}
    if not frames:
        pytest.skip("one CPU allowed: the real-frame benchmark needs two")
    cost = {row["name"].split(" (")[0].split(",")[0]: row for row in frames["real_frames_cpu"]}
    assert set(cost) == {"XDP_DROP floor", "XDP filter", "nftables", "user space"} and len(frames["real_frames_cpu"]) == 5
    for row in frames["real_frames_cpu"]:
        assert row["unit"] == "ns" and row["median"] > 0, row["name"]
        if not row["name"].startswith("XDP"):
            assert row["floor"]["name"] == "XDP filter" and [t["op"] for t in row["targets"]] == [">="]
            assert isinstance(row["targets"][0]["met"], bool)
    assert len(frames["real_frames_rate"]) == 5
    with open(out / "fleet_rollout.json") as handle:
        fleet = {table["key"]: table["rows"] for table in json.load(handle)["tables"]}
    names = [row["name"] for row in fleet["fleet_rollout"]]
    assert names == [
        "ansible.builtin.ping round",
        "deploy_xdp.yml, first deploy",
        "deploy_xdp.yml, changed=0 re-run",
        "deploy_xdp.yml, changed=0 re-run, every role (deploy_xdp_fast_rerun=false)",
        "naive way (ip link + one bpftool call per entry)",
    ]
    assert all(row["floor"]["name"] == "ping round" for row in fleet["fleet_rollout"][1:])
    assert [row["params"]["hosts"] for row in fleet["fleet_per_host"]] == [1, 1]


def test_report_is_generated_with_environment_targets_and_plots(quick_run):
    _out, report = quick_run
    text = report.read_text()
    assert text.startswith("# Performance report")
    assert "generated by scripts/bench_report.py" in text
    for heading in (
        "## Environment",
        "## Targets",
        "## Not measured yet",
        "## Data plane: xdp_filter and tc_egress",
        "## Data plane: xdp_lb",
        "## Real frames: CPU time per dropped frame",
        "## Map sync: ebpf.fleet.bpf_map",
        "## Fleet rollout: deploy_xdp.yml on lab hosts",
    ):
        assert heading in text, heading
    assert "load average at start" in text and "load average at end" in text
    assert "met" in text
    images = [line.split("](", 1)[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert images
    for image in images:
        path = os.path.join(os.path.dirname(str(report)), image)
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n", image
