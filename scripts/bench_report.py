"""Turn the benchmarks' JSON results (build/bench/*.json, schema in tests/bench/benchlib.py) into
docs/performance.md and its PNG plots (docs/performance/*.png).

    python scripts/bench_report.py [--in build/bench] [--out docs/performance.md]

The plots go into a directory named like the report without its suffix (docs/performance/), linked relatively.
Run by `make bench` after the benchmarks; exits non-zero when a result file is not well-formed.
"""

import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the benchmarks the report expects, in the report's order: (JSON name, what it covers, where it comes from)
EXPECTED = [
    ("dataplane_filter", "Data plane: xdp_filter and tc_egress", "tests/bench/bench_dataplane_filter.py"),
    ("dataplane_lb", "Data plane: xdp_lb", "tests/bench/bench_dataplane_lb.py"),
    ("real_frames", "Real frames: CPU time per dropped frame", "tests/bench/bench_real_frames.py"),
    ("maps", "Map sync: ebpf.fleet.bpf_map", "tests/bench/bench_maps.py"),
    ("map_records", "Map sync: deployment records", "tests/bench/bench_map_records.py"),
    ("lb_deploy", "Deploy: ebpf.fleet.lb_tables", "tests/bench/bench_lb_deploy.py"),
    ("fleet_rollout", "Fleet rollout: deploy_xdp.yml on lab hosts", "tests/bench/bench_fleet_rollout.py"),
]
ROW_KEYS = ("name", "includes", "params", "unit", "samples", "median", "min", "max", "rounds", "targets")


class Malformed(Exception):
    pass


def check(data: dict, path: str):
    """Raise Malformed when a result file does not follow the schema."""
    for key in ("schema", "name", "title", "env", "load_start", "load_end", "tables", "plots"):
        if key not in data:
            raise Malformed("%s: no %r" % (path, key))
    for table in data["tables"]:
        for key in ("key", "title", "rows"):
            if key not in table:
                raise Malformed("%s: a table without %r" % (path, key))
        for row in table["rows"]:
            missing = [key for key in ROW_KEYS if key not in row]
            if missing:
                raise Malformed("%s: row %r lacks %s" % (path, row.get("name"), ", ".join(missing)))
            if not row["min"] <= row["median"] <= row["max"]:
                raise Malformed("%s: row %r: median outside min-max" % (path, row["name"]))
            for item in row["targets"]:
                if not {"text", "figure", "met", "limit"} <= set(item):
                    raise Malformed("%s: row %r: a target without text, figure, limit or met" % (path, row["name"]))


def load(indir: str) -> dict:
    out = {}
    for path in sorted(glob.glob(os.path.join(indir, "*.json"))):
        with open(path) as handle:
            try:
                data = json.load(handle)
            except ValueError as exc:
                raise Malformed("%s: not JSON (%s)" % (path, exc)) from None
        check(data, path)
        out[data["name"]] = data
    return out


def num(value, unit=""):
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if unit == "s" or abs(value) < 10:
            text = "%.2f" % value
        else:
            text = "%.0f" % value
        return text
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value).replace("|", "/")


def verdict(item: dict) -> str:
    return "%s: %s %s" % (item["text"], num(item["figure"]), "**met**" if item["met"] else "**MISSED**")


def render_table(table: dict) -> list:
    rows = table["rows"]
    if not rows:
        return ["(no rows)", ""]
    cols = table.get("columns") or []
    any_floor = any("floor" in row for row in rows)
    header = ["row"] + cols + ["median", "min-max", "unit"]
    if any_floor:
        header += ["beside (median)", "above", "ratio"]
    header += ["CPUs", "target", "includes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    for row in rows:
        unit = row["unit"]
        cells = [num(row["name"])] + [num(row["params"].get(col, "-"), unit) for col in cols]
        cells += [num(row["median"], unit), "%s-%s" % (num(row["min"], unit), num(row["max"], unit)), unit]
        if any_floor:
            if "floor" in row:
                cells += [
                    "%s %s" % (num(row["floor"]["name"]), num(row["floor"]["median"], unit)),
                    ("%+.0f" if unit == "ns" else "%+.2f") % row["above"],
                    "%.2f" % row["ratio"]["value"],
                ]
            else:
                cells += ["-", "-", "-"]
        cells.append(num(row["params"].get("cpus", "-")))
        cells.append("<br>".join(verdict(t) for t in row["targets"]) or "-")
        inc = row["includes"]
        cells.append(num("; ".join(str(inc.get(k, "-")) for k in ("method", "packet", "path", "encapsulation"))))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def draw(plot: dict, plotdir: str):
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, axis = plt.subplots(figsize=(10, 4.8))
    series = sorted(plot["series"].items())
    colors = plt.get_cmap("tab20")
    for index, (label, points) in enumerate(series):
        points = sorted(points)
        style = "--" if "LPM" in label else ":" if "xdp-filter" in label else "-"
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="os^D"[index % 4], linestyle=style, color=colors(index % 20), label=label)
    if plot.get("hline"):
        axis.axhline(plot["hline"][0], color="red", linestyle="--", label=plot["hline"][1])
    if plot.get("logx"):
        axis.set_xscale("log")
    if plot.get("logy"):
        axis.set_yscale("log")
    axis.set_title(plot["title"])
    axis.set_xlabel(plot["xlabel"])
    axis.set_ylabel(plot["ylabel"])
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    os.makedirs(plotdir, exist_ok=True)
    fig.savefig(os.path.join(plotdir, plot["file"]), dpi=90)
    plt.close(fig)


def report(results: dict, outpath: str, notes=()) -> str:
    plotdir = os.path.splitext(outpath)[0]
    plotrel = os.path.basename(plotdir)
    for old in glob.glob(os.path.join(plotdir, "*.png")):
        os.unlink(old)
    out = [
        "# Performance report",
        "",
        "<!-- generated by scripts/bench_report.py from build/bench/*.json (`make bench`): do not edit by hand -->",
        "",
        "Generated by `make bench` (scripts/bench_report.py from the JSON results in build/bench/); each section "
        "comes from one run of the benchmark it names, whose start time and load average are listed under "
        "Environment, and every ratio is against a floor or an alternative measured in the same rounds of that "
        "run. Medians over the rounds, with the min-max spread; targets are read on the median. Regenerate it, "
        "do not edit it.",
        "",
    ]
    if any(data["quick"] for data in results.values()):
        out += ["**Quick form (BENCH_QUICK=1): small tables and few rounds; the figures only show that the benchmarks run.**", ""]
    ordered = [name for name, _title, _src in EXPECTED if name in results]
    ordered += sorted(set(results) - set(ordered))
    if results:
        first = results[min(results, key=lambda n: results[n]["started"])]
        last = results[max(results, key=lambda n: results[n]["finished"])]
        env = first["env"]
        out += [
            "## Environment",
            "",
            "| | |",
            "| --- | --- |",
            "| kernel | %s (%s) |" % (env["kernel"], env["machine"]),
            "| CPU | %s |" % env["cpu_model"],
            "| cores | %d (allowed to the benchmarks: %s) |" % (env["cores"], num(env["cpus_allowed"])),
            "| run | %s to %s UTC |" % (first["started"], last["finished"]),
            "| load average at start (1, 5, 15 min) | %s |" % " ".join("%.2f" % v for v in first["load_start"]),
            "| load average at end (1, 5, 15 min) | %s |" % " ".join("%.2f" % v for v in last["load_end"]),
            "",
            "The machine is shared: a load average above the core count means other work ran beside the "
            "benchmarks; BPF_PROG_TEST_RUN figures are the kernel's own timing of the program, but preemption "
            "and cache pressure still reach them (the min-max spread shows how much).",
            "",
        ]
        per = ["| benchmark | started | load at start | load at end |", "| --- | --- | --- | --- |"]
        for name in ordered:
            data = results[name]
            per.append("| %s | %s | %.2f | %.2f |" % (name, data["started"], data["load_start"][0], data["load_end"][0]))
        out += per + [""] + [note + "\n" for note in notes]
    # targets first: what an operator reads
    targets = []
    for name in ordered:
        for table in results[name]["tables"]:
            for row in table["rows"]:
                for item in row["targets"]:
                    where = ", ".join(
                        "%s %s" % (col, num(row["params"][col]))
                        for col in table.get("columns", [])
                        if col in row["params"] and not col.startswith(("repeat", "CPU s", "peak", "/proc/stat", "dropped share"))
                    )
                    targets.append((name, row["name"] + (" (%s)" % where if where else ""), item))
    if targets:
        met = sum(1 for _n, _r, item in targets if item["met"])
        out += [
            "## Targets",
            "",
            "%d of %d targets met in this run." % (met, len(targets)),
            "",
            "| benchmark | row | target | figure | verdict |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, rowname, item in targets:
            cells = (name, num(rowname), num(item["text"]), num(item["figure"]), "met" if item["met"] else "**MISSED**")
            out.append("| %s | %s | %s | %s | %s |" % cells)
        out.append("")
    missing = []
    for name, title, src in EXPECTED:
        if name not in results:
            missing.append("- **%s**: not measured yet (%s)." % (title, src))
    for name in ordered:
        for item in results[name].get("not_measured", []):
            missing.append("- **%s**: %s." % (item["what"], item["why"]))
    if missing:
        out += ["## Not measured yet", ""] + missing + [""]
    for name in ordered:
        data = results[name]
        out += ["## %s" % data["title"], "", data.get("description", ""), ""]
        for table in data["tables"]:
            out += ["### %s" % table["title"], ""]
            if table.get("description"):
                out += [table["description"], ""]
            out += render_table(table)
        for plot in data["plots"]:
            draw(plot, plotdir)
            out += ["![%s](%s/%s)" % (plot["title"], plotrel, plot["file"]), ""]
        for note in data.get("notes", []):
            out += [note, ""]
    text = "\n".join(out).rstrip() + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(outpath)), exist_ok=True)
    with open(outpath, "w") as handle:
        handle.write(text)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in", dest="indir", default=os.path.join(ROOT, "build", "bench"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "performance.md"))
    parser.add_argument("--note", action="append", default=[], help="a sentence about this run, under Environment")
    args = parser.parse_args()
    try:
        results = load(args.indir)
    except Malformed as exc:
        sys.exit("bench_report: %s" % exc)
    if not results:
        sys.exit("bench_report: no results in %s (run make bench)" % args.indir)
    report(results, args.out, args.note)
    print("report written to %s (%d benchmarks)" % (args.out, len(results)))


if __name__ == "__main__":
    main()
