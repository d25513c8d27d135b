"""The benchmarks' shared pieces: the JSON result schema, the environment, rounds over CPUs, targets.

Every benchmark in tests/bench/ builds one `Bench`, adds rows to named tables and plots, and writes
build/bench/<name>.json; scripts/bench_report.py turns every JSON there into docs/performance.md.

A row (one measured thing) holds:
    name        what was measured, as the table shows it
    includes    what the figure includes: method (e.g. "BPF_PROG_TEST_RUN, repeat 100000"), packet, path
                (the code path taken), encapsulation
    params      the row's coordinates (table size, backends, CPUs the rounds ran on, ...)
    samples     the figure of each round; median, min, max over the rounds; unit
    floor       (optional) the floor or alternative measured in the same rounds: its name and median
    above       (optional) median over rounds of (row - floor) in the same round
    ratio       (optional) median over rounds of row / floor, and what it is against
    targets     list of: text, the metric it is read on, op, limit, the figure and met (true / false)

BENCH_QUICK=1 selects small sizes and few rounds (the form `make test` runs); BENCH_OUT changes the output
directory (the quick test writes into its tmp_path).
"""

import datetime
import json
import os
import platform
import statistics

from harness.cpus import cpus  # tests/ is on sys.path (every benchmark puts it there)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCHEMA = 1
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
OUT_DIR = os.environ.get("BENCH_OUT") or os.path.join(REPO, "build", "bench")


def pick(quick, full):
    """quick in BENCH_QUICK=1 runs, else full."""
    return quick if QUICK else full


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    return {
        "kernel": os.uname().release,
        "machine": os.uname().machine,
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "python": platform.python_version(),
    }


def round_cpus(rounds: int) -> list:
    """The CPU of each round: alternating over the allowed CPUs."""
    allowed = cpus()
    return [allowed[i % len(allowed)] for i in range(rounds)]


def spread(samples) -> dict:
    samples = list(samples)
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "rounds": len(samples)}


def target(text: str, metric: str, limit: float, figure: float, op: str = "<=") -> dict:
    """A target read on one metric of a row ("median", "above", "ratio", or any param name)."""
    met = figure <= limit if op == "<=" else figure >= limit
    return {"text": text, "metric": metric, "op": op, "limit": limit, "figure": figure, "met": bool(met)}


def add_target(row: dict, text: str, metric: str, limit: float, figure: float, op: str = "<="):
    """Attach a target to a row (a row may carry several: e.g. the floor and an alternative)."""
    row.setdefault("targets", []).append(target(text, metric, limit, figure, op))


class Bench:
    """One benchmark's results: tables of rows, plots, notes; written as JSON."""

    def __init__(self, name: str, title: str, description: str):
        self.data = {
            "schema": SCHEMA,
            "name": name,
            "title": title,
            "description": description,
            "quick": QUICK,
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "env": environment(),
            "load_start": list(os.getloadavg()),
            "tables": [],
            "plots": [],
            "notes": [],
            "not_measured": [],
        }
        self.tables = {}

    def table(self, key: str, title: str, description: str = "", columns=None) -> list:
        """A table (returns its row list). columns: extra param names to show as columns."""
        if key not in self.tables:
            entry = {"key": key, "title": title, "description": description, "columns": list(columns or []), "rows": []}
            self.data["tables"].append(entry)
            self.tables[key] = entry
        return self.tables[key]["rows"]

    def row(
        self,
        table: str,
        name: str,
        samples,
        unit: str,
        includes: dict,
        params: dict = None,
        floor=None,
        floor_name: str = "",
        ratio_against: str = "",
        target_spec=None,
    ) -> dict:
        """Add a row. samples: the figure of each round. floor: the floor's figure in the same rounds (same
        length) or one number; the row then carries `above` and `ratio`. target_spec: (text, metric, op, limit)."""
        samples = [float(s) for s in samples]
        row = {"name": name, "includes": dict(includes), "params": dict(params or {}), "unit": unit, "samples": samples}
        row.update(spread(samples))
        if floor is not None:
            floors = [float(f) for f in floor] if isinstance(floor, (list, tuple)) else [float(floor)] * len(samples)
            row["floor"] = {"name": floor_name, "median": statistics.median(floors), "samples": floors}
            row["above"] = statistics.median(s - f for s, f in zip(samples, floors))
            row["ratio"] = {"value": statistics.median(s / f for s, f in zip(samples, floors) if f), "against": ratio_against or floor_name}
        row["targets"] = []
        if target_spec is not None:
            text, metric, op, limit = target_spec
            figure = row["ratio"]["value"] if metric == "ratio" else row[metric] if metric in row else row["params"][metric]
            add_target(row, text, metric, limit, figure, op)
        self.tables[table]["rows"].append(row)
        return row

    def plot(self, file: str, title: str, xlabel: str, ylabel: str, series: dict, logx: bool = False, hline=None, logy: bool = False):
        """A line plot the report draws: series {label: [(x, y), ...]}; hline (value, label) for a target."""
        self.data["plots"].append(
            {
                "file": file,
                "title": title,
                "xlabel": xlabel,
                "ylabel": ylabel,
                "logx": logx,
                "logy": logy,
                "hline": list(hline) if hline else None,
                "series": {k: [list(p) for p in v] for k, v in series.items()},
            }
        )

    def note(self, text: str):
        self.data["notes"].append(text)

    def not_measured(self, what: str, why: str):
        self.data["not_measured"].append({"what": what, "why": why})

    def write(self) -> str:
        self.data["load_end"] = list(os.getloadavg())
        self.data["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        os.makedirs(OUT_DIR, exist_ok=True)
        path = os.path.join(OUT_DIR, self.data["name"] + ".json")
        with open(path + ".tmp", "w") as handle:
            json.dump(self.data, handle, indent=1)
        os.replace(path + ".tmp", path)
        print("results written to %s" % path)
        return path


def print_table(rows: list, title: str = ""):
    """A plain-text view of rows for the terminal (the report is the real output)."""
    if title:
        print("\n### " + title)
    for row in rows:
        extra = ""
        if "above" in row:
            extra = "  above %s: %+.0f  ratio %.2f" % (row["floor"]["name"], row["above"], row["ratio"]["value"])
        verdict = "".join("  [%s: %.2f %s]" % (t["text"], t["figure"], "met" if t["met"] else "MISSED") for t in row.get("targets", []))
        print("%-60s %10.1f %s (%.1f-%.1f)%s%s" % (row["name"][:60], row["median"], row["unit"], row["min"], row["max"], extra, verdict), flush=True)
