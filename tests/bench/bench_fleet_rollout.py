"""Benchmark of fleet rollouts on lab hosts (run by `make bench`; not a test). Writes build/bench/fleet_rollout.json.

On a namespace lab of N edge hosts (scripts/lab.sh with EBFLAB_EDGES=N, reached through the collection's
ebpf.fleet.netns connection), wall time of:

- an `ansible.builtin.ping` round over the edges (Ansible's own floor: one module run per host);
- `playbooks/deploy_xdp.yml` over the edges: the first deploy on fresh hosts, then the `changed=0` re-run (the
  fingerprint check skips the roles) and, at the sizes with the naive way, the same re-run with every role run
  (`deploy_xdp_fast_rerun=false`);
- the naive way (per host, at the smaller sizes): shell tasks that attach the filter object with
  `ip link set dev lab0 xdpdrv obj ...` and write each rule with one `bpftool map update` call.

Every playbook is run with harness.runner's playbook_command() / playbook_env() and the same forks. Each round
builds a fresh lab (lab.sh down + up, about 2 s for 50 edges, not timed), so a first deploy meets hosts that never
had the collection. Sizes: 1, 50, 10 and 25 edges in that order (BENCH_QUICK=1: 1 host, one round). The 50-host
rows carry the targets (re-run <= 3x the ping round, first deploy <= 10x); the large sizes get one round, the naive
way runs at 1 and 10 hosts, and 10 and 25 hosts are dropped (and listed as not measured) when the 50-host run
projects them past BENCH_FLEET_BUDGET seconds (default 800) for this benchmark. BENCH_FLEET_SIZES=1,10 (or
--sizes) runs only those sizes. Before the fingerprint check, the 50-host round alone took 20 minutes (first deploy
691 s, re-run 494 s) at load 7-15 on the 2-CPU development VM.

    .venv/bin/python tests/bench/bench_fleet_rollout.py [--quick]     (BENCH_QUICK=1 as --quick)
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, TESTS)
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
from harness import bpffs, netns, paths  # noqa: E402
from harness.runner import playbook_command, playbook_env  # noqa: E402

LAB = os.path.join(paths.REPO, "scripts", "lab.sh")
DEPLOY = os.path.join(paths.REPO, "playbooks", "deploy_xdp.yml")
FILTER_OBJ = paths.bpf_object("xdp_filter")
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
# The commit-confirmed checkpoint stays on, with a longer timeout than the default 60 s: over 50 hosts on this loaded
# 2-CPU machine the controller came back to the first hosts more than 60 s after their change, and they reverted
# by themselves (a run at load 18). The same value for every size.
CONFIRM_TIMEOUT = 900
FORKS = 10  # for every playbook here (Ansible defaults to 5; more hosts at once, the same for the ping round)

PING = """---
- name: Ping round (Ansible's floor)
  hosts: "{{ bench_hosts }}"
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
"""

# The rules of examples/inventory/group_vars/xdp_filter.yml, written the naive way: one bpftool call per entry.
# bpftool cannot fill the filter's stride table (a map of maps) by hand, so the naive way writes the same number of
# entries into the program's own LPM trie (prefix rules and the management prefix) and port array (port rules and
# the management port): its figure is the cost of the commands, not a working policy.
NAIVE_ENTRIES = [
    ("filter_mgmt_v4", "1c 00 00 00 c6 33 64 40", "01 00 00 00"),  # 198.51.100.64/28
    ("filter_mgmt_v4", "18 00 00 00 c0 00 02 00", "01 00 00 00"),  # 192.0.2.0/24
    ("filter_mgmt_v4", "1c 00 00 00 c6 33 64 00", "01 00 00 00"),  # 198.51.100.0/28 (management)
    ("filter_mgmt_por", "50 00 00 00", "01 00 00 00"),  # tcp/80
    ("filter_mgmt_por", "35 00 00 00", "01 00 00 00"),  # udp/53
    ("filter_mgmt_por", "16 00 00 00", "01 00 00 00"),  # tcp/22 (management)
]

NAIVE = """---
- name: The naive way (shell tasks, one bpftool call per map entry)
  hosts: "{{ bench_hosts }}"
  gather_facts: false
  tasks:
    - name: Attach the filter object
      ansible.builtin.command: ip -force link set dev lab0 xdpdrv obj %(obj)s sec xdp
      changed_when: true
    - name: Find the attached program's maps
      ansible.builtin.shell: |
        set -e
        prog=$(bpftool -j net show dev lab0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["xdp"][0]["id"])')
        for m in $(bpftool -j prog show id "$prog" | python3 -c 'import json,sys; print(*json.load(sys.stdin)["map_ids"])'); do
          bpftool -j map show id "$m"; echo
        done
      register: naive_maps
      changed_when: false
    - name: Write each entry
      ansible.builtin.command: bpftool map update id {{ ids[item.0] }} key hex {{ item.1 }} value hex {{ item.2 }}
      vars:
        ids: "{{ naive_maps.stdout_lines | select | map('from_json') | items2dict(key_name='name', value_name='id') }}"
      loop: %(entries)s
      changed_when: true
"""


class Lab:
    """scripts/lab.sh under a prefix, folder and pin root of this run."""

    def __init__(self, workdir: str, edges: int):
        self.dir = os.path.join(workdir, "lab")
        self.edges = edges
        self.env = dict(
            os.environ,
            EBFLAB_PREFIX=netns.unique("fl") + "-",
            EBFLAB_DIR=self.dir,
            EBFLAB_PIN_ROOT=os.path.join(bpffs.TEST_PIN_BASE, netns.unique("fl")),
            EBFLAB_PYTHON=paths.PYTHON,
            EBFLAB_EDGES=str(edges),
        )
        self.inventory = os.path.join(self.dir, "inventory.ini")

    def sh(self, action: str):
        proc = subprocess.run(["bash", LAB, action], env=self.env, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise RuntimeError("lab.sh %s: exit %d\n%s%s" % (action, proc.returncode, proc.stdout, proc.stderr))

    def __enter__(self):
        try:
            self.sh("up")
        except BaseException:
            self.sh("down")
            raise
        return self

    def __exit__(self, *exc):
        self.sh("down")
        shutil.rmtree(self.env["EBFLAB_PIN_ROOT"], ignore_errors=True)
        return False


def timed_playbook(lab: Lab, playbook: str, hosts: int, expect_changed=None, extra=None) -> float:
    """Seconds ansible-playbook took over the lab's edges; fails unless every edge ran without failure (and with
    expect_changed=0, reported changed=0)."""
    extra = dict({"bench_hosts": "edges", "deploy_xdp_hosts": "edges", "deploy_xdp_confirm_timeout": CONFIRM_TIMEOUT}, **(extra or {}))
    cmd = playbook_command(playbook, lab.inventory, extra) + ["--forks", str(FORKS)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=playbook_env(), check=False)
    secs = time.perf_counter() - start
    recap = {m.group(1): (int(m.group(2)), int(m.group(3)), int(m.group(4))) for m in RECAP.finditer(proc.stdout)}
    edges = {"edge%d" % n for n in range(1, hosts + 1)}
    bad = [h for h in edges if h not in recap or recap[h][1] or recap[h][2] or (expect_changed is not None and recap[h][0] != expect_changed)]
    if proc.returncode != 0 or bad:
        raise RuntimeError(
            "%s over %d hosts: exit %d, hosts not as expected: %s\n%s\n%s"
            % (os.path.basename(playbook), hosts, proc.returncode, sorted(bad)[:5], proc.stdout[-4000:], proc.stderr[-2000:])
        )
    return secs


def measure_size(workdir: str, hosts: int, rounds: int, naive: bool, playbooks: dict) -> dict:
    """Per round (a fresh lab each): ping, first deploy, changed=0 re-run; then (naive) a fresh lab, the naive way."""
    out = {"ping": [], "first": [], "rerun": [], "full": [], "naive": []}
    for _round in range(rounds):
        with Lab(workdir, hosts) as lab:
            out["ping"].append(timed_playbook(lab, playbooks["ping"], hosts))
            out["first"].append(timed_playbook(lab, DEPLOY, hosts))
            out["rerun"].append(timed_playbook(lab, DEPLOY, hosts, expect_changed=0))
            if naive:  # the same re-run with every role run on every host (what the fingerprint check saves)
                out["full"].append(timed_playbook(lab, DEPLOY, hosts, expect_changed=0, extra={"deploy_xdp_fast_rerun": False}))
        if naive:
            with Lab(workdir, hosts) as lab:
                out["naive"].append(timed_playbook(lab, playbooks["naive"], hosts))
        extra = ", every role %.1f s, naive %.1f s" % (out["full"][-1], out["naive"][-1]) if naive else ""
        print(
            "%3d hosts: ping %.1f s, first deploy %.1f s, re-run %.1f s%s" % (hosts, out["ping"][-1], out["first"][-1], out["rerun"][-1], extra),
            flush=True,
        )
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="as BENCH_QUICK=1: 1 host, one round")
    parser.add_argument(
        "--sizes",
        default=os.environ.get("BENCH_FLEET_SIZES", ""),
        help="only these host counts, comma-separated (e.g. 1,10); default $BENCH_FLEET_SIZES or the plan",
    )
    args = parser.parse_args()
    quick = args.quick or benchlib.QUICK
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces, BPF)")
    # (hosts, rounds, naive way too): the large sizes get one round (a 50-host deploy takes minutes here)
    # 1 host first, then 50 (the targets), then 10 and 25 while the budget lasts. The quick form runs 1 host only:
    # a deploy takes 20-30 s per run on this loaded 2-CPU machine, and the whole quick test must stay < 2 minutes.
    plan = [(1, 1, True)] if quick else [(1, 2, True), (50, 1, False), (10, 1, True), (25, 1, False)]
    if args.sizes:
        wanted = [int(size) for size in args.sizes.split(",")]
        rounds_of = {hosts: (rounds, naive) for hosts, rounds, naive in plan}
        plan = [(hosts,) + rounds_of.get(hosts, (1, False)) for hosts in wanted]
    budget = float(os.environ.get("BENCH_FLEET_BUDGET", "800"))
    bench = benchlib.Bench(
        "fleet_rollout",
        "Fleet rollout: deploy_xdp.yml on lab hosts",
        "Wall time of playbooks/deploy_xdp.yml (first deploy and changed=0 re-run) over N lab edge "
        "hosts (scripts/lab.sh, ebpf.fleet.netns connection), beside an ansible.builtin.ping round "
        "over the same hosts in the same round (Ansible's floor) and, per host, the naive way "
        "(tests/bench/bench_fleet_rollout.py).",
    )
    workdir = tempfile.mkdtemp(prefix="bench-fleet-")
    playbooks = {"ping": os.path.join(workdir, "ping.yml"), "naive": os.path.join(workdir, "naive.yml")}
    with open(playbooks["ping"], "w") as handle:
        handle.write(PING)
    with open(playbooks["naive"], "w") as handle:
        handle.write(NAIVE % {"obj": FILTER_OBJ, "entries": [list(e) for e in NAIVE_ENTRIES]})
    started = time.perf_counter()
    results, skipped = {}, []
    try:
        for hosts, rounds, naive in plan:
            spent = time.perf_counter() - started
            if 50 in results and hosts not in (1, 50):
                # project this size from the 50-host round: deploy, re-run and ping scale with the host count
                per_host = sum(statistics.median(results[50][k]) for k in ("ping", "first", "rerun")) / 50
                projected = per_host * hosts * rounds * (2 if naive else 1)
                if spent + projected > budget:
                    skipped.append((hosts, "projected %.0f s on top of %.0f s spent: past the %.0f s budget" % (projected, spent, budget)))
                    continue
            results[hosts] = measure_size(workdir, hosts, rounds, naive, playbooks)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        bpffs.remove_all()  # this process's pin base on bpffs (each lab removes its own folder in it)
    bench.data["params"] = {"forks": FORKS, "budget_s": budget, "seconds": time.perf_counter() - started}

    key = "fleet_rollout"
    bench.table(
        key,
        "deploy_xdp.yml against an ansible.builtin.ping round over the same hosts",
        "Seconds of wall time per playbook run (ansible-playbook start to exit), forks %d, every host an edge "
        "running the XDP filter (examples/inventory/group_vars/xdp_filter.yml), commit-confirmed checkpoint "
        "on with deploy_xdp_confirm_timeout %d s. The ratio is against the ping round of the same round and "
        "lab. Rounds: %s." % (FORKS, CONFIRM_TIMEOUT, ", ".join("%d hosts %d" % (h, len(r["ping"])) for h, r in sorted(results.items()))),
        columns=["hosts"],
    )
    method = "ansible-playbook wall time, forks %d, ebpf.fleet.netns connection" % FORKS
    for hosts, res in sorted(results.items()):
        common = {"method": method, "packet": "-", "encapsulation": "-"}
        bench.row(key, "ansible.builtin.ping round", res["ping"], "s", dict(common, path="one ping task per host"), {"hosts": hosts})
        spec = ("<= 10 x the ping round", "ratio", "<=", 10) if hosts == 50 else None
        bench.row(
            key,
            "deploy_xdp.yml, first deploy",
            res["first"],
            "s",
            dict(common, path="fresh hosts: bpf_host, then the filter; commit-confirmed checkpoint on"),
            {"hosts": hosts},
            floor=res["ping"],
            floor_name="ping round",
            target_spec=spec,
        )
        spec = ("<= 3 x the ping round", "ratio", "<=", 3) if hosts == 50 else None
        bench.row(
            key,
            "deploy_xdp.yml, changed=0 re-run",
            res["rerun"],
            "s",
            dict(common, path="every host already in its declared state (changed=0 checked): one fingerprint check per host, the roles skipped"),
            {"hosts": hosts},
            floor=res["ping"],
            floor_name="ping round",
            target_spec=spec,
        )
        if res["full"]:
            bench.row(
                key,
                "deploy_xdp.yml, changed=0 re-run, every role (deploy_xdp_fast_rerun=false)",
                res["full"],
                "s",
                dict(common, path="every host already in its declared state (changed=0 checked): bpf_host and the filter's role run their checks"),
                {"hosts": hosts},
                floor=res["ping"],
                floor_name="ping round",
            )
        if res["naive"]:
            bench.row(
                key,
                "naive way (ip link + one bpftool call per entry)",
                res["naive"],
                "s",
                dict(common, path="shell tasks: attach, find the maps, %d bpftool map update calls" % len(NAIVE_ENTRIES)),
                {"hosts": hosts},
                floor=res["ping"],
                floor_name="ping round",
            )
    per = "fleet_per_host"
    bench.table(
        per,
        "Per host: deploy_xdp.yml against the naive way",
        "Seconds per host (a run's wall time divided by its host count) at the sizes where the naive way ran; "
        "the ratio is the naive way against deploy_xdp.yml's first deploy of the same size.",
        columns=["hosts"],
    )
    for hosts, res in sorted(results.items()):
        if not res["naive"]:
            continue
        common = {"method": method + ", divided by the host count", "packet": "-", "encapsulation": "-"}
        first = [s / hosts for s in res["first"]]
        naive = [s / hosts for s in res["naive"]]
        bench.row(
            per, "deploy_xdp.yml first deploy, per host", first, "s", dict(common, path="bpf_host and the filter, every check and record"), {"hosts": hosts}
        )
        bench.row(
            per,
            "naive way, per host",
            naive,
            "s",
            dict(common, path="attach + %d bpftool calls, no check, no record, no revert" % len(NAIVE_ENTRIES)),
            {"hosts": hosts},
            floor=first,
            floor_name="deploy_xdp.yml first deploy, per host",
        )
    series = {"ping round": [], "first deploy": [], "changed=0 re-run": [], "changed=0 re-run, every role": [], "naive way": []}
    for hosts, res in sorted(results.items()):
        series["ping round"].append((hosts, statistics.median(res["ping"])))
        series["first deploy"].append((hosts, statistics.median(res["first"])))
        series["changed=0 re-run"].append((hosts, statistics.median(res["rerun"])))
        if res["naive"]:
            series["naive way"].append((hosts, statistics.median(res["naive"])))
        if res["full"]:
            series["changed=0 re-run, every role"].append((hosts, statistics.median(res["full"])))
    bench.plot(
        "fleet_rollout.png",
        "deploy_xdp.yml: seconds against host count (forks %d)" % FORKS,
        "hosts",
        "seconds (wall time)",
        {k: v for k, v in series.items() if v},
    )
    for hosts, why in skipped:
        bench.not_measured("Fleet rollout over %d hosts" % hosts, why)
    if quick:
        bench.not_measured("Fleet rollout over 10, 25 and 50 hosts", "quick form (BENCH_QUICK=1): 1 host, one round")
    elif 50 not in results:
        bench.not_measured("Fleet rollout targets (50 hosts)", "the 50-host round did not run")
    bench.note(
        "Fleet rollout: the lab's hosts are network namespaces of this one machine, so every module of every "
        "host runs on its 2 CPUs: the figures are a controller-plus-hosts cost, where a real fleet spreads "
        "the hosts' part over their own CPUs. Rounds: %s (the sizes run 1, 50, 10, 25 in that order while "
        "BENCH_FLEET_BUDGET = %.0f s lasts: a 50-host deploy takes minutes here and `make bench` has 20 "
        "minutes for everything; the large sizes get one round). This benchmark took %.0f s."
        % (
            "; ".join("%d hosts %d%s" % (h, len(r["ping"]), " (naive way too)" if r["naive"] else "") for h, r in sorted(results.items())) or "none",
            budget,
            bench.data["params"]["seconds"],
        )
    )
    for name in (key, per):
        benchlib.print_table(bench.tables[name]["rows"], name)
    bench.write()


if __name__ == "__main__":
    main()
