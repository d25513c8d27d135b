# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Draw the lab demo's summary (demo_summary.json, written by playbooks/demo.yml) as one PNG.

    demo_chart.py build/demo/demo_summary.json build/demo/demo.png

Three panels: the XDP filter's packets per edge by verdict and reason, the load balancer's connections per
backend, and the egress program's packets per host, class and outcome. Needs matplotlib (requirements/).
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def stacked(ax, rows: dict, title: str, ylabel: str):
    """rows: {bar label: {segment label: count}} as stacked bars, one colour per segment label."""
    labels = list(rows)
    segments = sorted({seg for row in rows.values() for seg in row})
    bottoms = [0] * len(labels)
    for seg in segments:
        heights = [rows[label].get(seg, 0) for label in labels]
        ax.bar(labels, heights, bottom=bottoms, label=seg)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if segments:
        ax.legend(fontsize="small")
    ax.tick_params(axis="x", labelrotation=20)


def main(src: str, dst: str) -> int:
    with open(src, encoding="utf-8") as handle:
        summary = json.load(handle)
    filter_rows = {"%s %s" % (host, verdict): reasons for host, data in summary.items() for verdict, reasons in sorted(data.get("filter", {}).items())}
    lb_rows = {host: data["lb"]["backends"] for host, data in summary.items() if data.get("lb")}
    egress_rows = {"%s %s" % (host, name): outcomes for host, data in summary.items() for name, outcomes in sorted(data.get("egress", {}).items())}
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    stacked(axes[0], filter_rows, "XDP filter: packets by verdict and reason", "packets")
    stacked(axes[1], lb_rows, "XDP load balancer: connections per backend", "TCP connections")
    stacked(axes[2], egress_rows, "Egress TC: packets by class and outcome", "packets")
    fig.suptitle("ebpf.fleet lab demo (this run's traffic)")
    fig.tight_layout()
    fig.savefig(dst, dpi=100)
    print("chart: %s" % dst)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: demo_chart.py SUMMARY.json OUT.png")
    sys.exit(main(sys.argv[1], sys.argv[2]))
