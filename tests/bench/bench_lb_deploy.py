"""Benchmark: deploying the load balancer's tables with ebpf.fleet.lb_tables on a real loaded xdp_lb.

xdp_lb (build/bpf/xdp_lb.o) is loaded with ebpf.fleet.xdp_program on a veth in a namespace; then
ebpf.fleet.lb_tables declares 10 VIPs of 100 backends each (ring 65,537 slots, 1,000 backends) and the
script times, through ansible-playbook (what an operator waits for, per host) and through the module alone:
  - the first deploy (10 rings computed and written into spare rows, 1,000 backends);
  - the same run again (changed=0: every ring recomputed and compared with its live row);
  - check mode of a change (one backend added to one VIP);
  - that change (one ring swapped through a spare row);
and, as a floor measured in the same run, a playbook of one ansible.builtin.ping task through the same connection.
Targets (issue 8): changed=0 re-run under 10 s per host, first deploy under 20 s.
With --filter-baseline it also times the old way for 1 VIP of 2 backends: maglev_entries on the controller
and one bpf_map task per map, the ring's 65,537 entries passed as task arguments.
Wall seconds depend on what else the machine runs (the load average is printed); CPU seconds are those of the
child processes (ansible-playbook and its workers, the module), which the load does not inflate as much.
Run by `make bench` after `make bpf collection-link`; writes build/bench/lb_deploy.json. Not a test.
BENCH_QUICK=1: 2 VIPs of 10 backends, ring 1009, the floor and the first deploy only.
"""

import json
import os
import resource
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
from harness import paths  # noqa: E402
from harness.netns import NetnsFactory  # noqa: E402
from harness.runner import run_module, run_playbook  # noqa: E402

VIPS, BACKENDS, RING = benchlib.pick((2, 10, 1009), (10, 100, 65537))
PIN_ROOT = "/sys/fs/bpf/ebpf_fleet_bench_lb_%d" % os.getpid()
CPU_USED = []

PLAY = """
- hosts: lab
  gather_facts: false
  tasks:
    - name: Declare the load balancer
      ebpf.fleet.lb_tables:
        name: lb
        pin_root: "%(pin_root)s"
        ring_size: %(ring)d
        config: {lb_mac: "02:00:00:00:ff:01", tunnel_src_v4: 203.0.113.0/24}
        vips: "{{ lookup('ansible.builtin.file', '%(vips_file)s') | from_json }}"
"""

FLOOR = """
- hosts: lab
  gather_facts: false
  tasks:
    - name: The floor, one trivial module through the same connection
      ansible.builtin.ping:
"""

BASELINE = """
- hosts: lab
  gather_facts: false
  vars:
    lb: "{{ vips | ebpf.fleet.maglev_entries(config={'lb_mac': '02:00:00:00:ff:01'}) }}"
    vips:
      - vip: 192.0.2.99
        port: 80
        backends:
          - {address: 198.51.100.1, mac: "02:00:00:00:00:01"}
          - {address: 198.51.100.2, mac: "02:00:00:00:00:02"}
  tasks:
    - name: Write them, one map per task (the filter's documented way)
      ebpf.fleet.bpf_map:
        name: lbold
        map: "{{ item.key }}"
        pin_root: "%(pin_root)s"
        mode: merge
        entries: "{{ item.value }}"
      loop: "{{ lb.maps | dict2items }}"
      loop_control:
        label: "{{ item.key }}"
"""


def declaration(extra=0):
    """VIPS VIPs of BACKENDS backends; extra adds that many backends to the first VIP."""
    vips = []
    for v in range(VIPS):
        count = BACKENDS + (extra if v == 0 else 0)
        vips.append(
            {
                "vip": "192.0.2.%d" % (v + 1),
                "port": 80,
                "proto": "tcp",
                "mode": "ipip",
                "backends": [{"address": "2001:db8:%x::%x" % (v + 1, n + 1), "mac": "02:00:00:00:00:01"} for n in range(count)],
            }
        )
    return vips


def timed(func, *args, **kwargs):
    """(wall seconds, result); CPU seconds of the child processes (ansible-playbook, the module) go to CPU_USED."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = func(*args, **kwargs)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_USED.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall, result


def play(workdir, inventory, name, check=False):
    proc = run_playbook(os.path.join(workdir, name), inventory=inventory, check=check, diff=False)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "[WARNING]" in out:
        raise SystemExit("ansible-playbook failed:\n" + out[-3000:])
    return "changed=1" in out


def main():
    baseline = "--filter-baseline" in sys.argv
    factory = NetnsFactory()
    workdir = tempfile.mkdtemp(prefix="bench_lb_")
    rows = []
    try:
        ns = factory("blb")
        ns.veth("la", "lb", addr_a="198.51.100.1/24", addr_b="198.51.100.2/24")
        state_dir = os.path.join(workdir, "state")
        res = run_module(
            "xdp_program", {"name": "lb", "object": paths.bpf_object("xdp_lb"), "interfaces": ["la"], "pin_root": PIN_ROOT, "state_dir": state_dir}, netns=ns
        )
        if res.failed:
            raise SystemExit("loading xdp_lb failed: %s" % res.get("msg"))
        inventory = os.path.join(workdir, "inventory.ini")
        with open(inventory, "w") as handle:
            handle.write("lab ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % ns.name)
        for name, vips in (("vips.json", declaration()), ("vips_plus_one.json", declaration(1))):
            with open(os.path.join(workdir, name), "w") as handle:
                json.dump(vips, handle)
        for name, vips_file in (("play.yml", "vips.json"), ("play_plus_one.yml", "vips_plus_one.json")):
            with open(os.path.join(workdir, name), "w") as handle:
                handle.write(PLAY % {"pin_root": PIN_ROOT, "ring": RING, "vips_file": os.path.join(workdir, vips_file)})
        with open(os.path.join(workdir, "floor.yml"), "w") as handle:
            handle.write(FLOOR)
        what = "%d VIPs x %d backends, ring %d" % (VIPS, BACKENDS, RING)
        secs, _changed = timed(play, workdir, inventory, "floor.yml")
        rows.append(("ansible-playbook", "floor: one ansible.builtin.ping task", "-", secs, CPU_USED[-1], False, None))
        plays = (
            ("first deploy", "play.yml", False, 20),
            ("re-run, changed=0", "play.yml", False, 10),
            ("check mode: one backend added", "play_plus_one.yml", True, None),
            ("one backend added (one ring swapped)", "play_plus_one.yml", False, None),
            ("re-run, changed=0", "play_plus_one.yml", False, 10),
        )
        for label, name, check, target in plays[:1] if benchlib.QUICK else plays:
            secs, changed = timed(play, workdir, inventory, name, check)
            rows.append(("ansible-playbook", label, what, secs, CPU_USED[-1], changed, target))
        # the module alone (no controller): where the time goes on the host
        args = {"name": "lb", "pin_root": PIN_ROOT, "ring_size": RING, "config": {"lb_mac": "02:00:00:00:ff:01", "tunnel_src_v4": "203.0.113.0/24"}}
        for label, vips in () if benchlib.QUICK else (("one backend removed (one ring swapped)", declaration()), ("re-run, changed=0", declaration())):
            secs, res = timed(run_module, "lb_tables", dict(args, vips=vips), netns=ns)
            if res.failed:
                raise SystemExit("lb_tables failed: %s" % res.get("msg"))
            rows.append(("module only", label, what, secs, CPU_USED[-1], res.changed, 10 if "changed=0" in label else None))
        if baseline:
            res = run_module(
                "xdp_program",
                {"name": "lbold", "object": paths.bpf_object("xdp_lb"), "interfaces": ["lb"], "pin_root": PIN_ROOT, "state_dir": state_dir},
                netns=ns,
            )
            if res.failed:
                raise SystemExit("loading the baseline xdp_lb failed: %s" % res.get("msg"))
            with open(os.path.join(workdir, "baseline.yml"), "w") as handle:
                handle.write(BASELINE % {"pin_root": PIN_ROOT})
            for label in ("first deploy", "re-run"):
                secs, changed = timed(play, workdir, inventory, "baseline.yml")
                rows.append(("maglev_entries + bpf_map", label, "1 VIP x 2 backends, ring 65537", secs, CPU_USED[-1], changed, None))
    finally:
        factory.delete_all()
        shutil.rmtree(PIN_ROOT, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    bench = benchlib.Bench(
        "lb_deploy",
        "Deploy: ebpf.fleet.lb_tables on a loaded xdp_lb",
        "Wall and CPU seconds of ansible-playbook runs (one lab host, a network namespace) and "
        "module runs, beside an ansible.builtin.ping play through the same connection in the same "
        "run (tests/bench/bench_lb_deploy.py).",
    )
    bench.table(
        "lb_deploy",
        "lb_tables deploy, one host (%d VIPs x %d backends, ring %d)" % (VIPS, BACKENDS, RING),
        "One run each (runs change the host's state, so they cannot be repeated as rounds); the ratio is "
        "against the ping play of the same run. CPU seconds: the child processes (ansible-playbook and its "
        "workers, the module).",
        columns=["how", "CPU s", "changed"],
    )
    floor_secs = rows[0][3]
    for how, label, what, secs, cpu, changed, target in rows:
        spec = None if target is None else ("< %d s" % target, "median", "<=", target)
        bench.row(
            "lb_deploy",
            label,
            [secs],
            "s",
            {"method": "%s, wall seconds" % how, "packet": "-", "path": what, "encapsulation": "-"},
            {"how": how, "CPU s": cpu, "changed": "yes" if changed else "no"},
            floor=None if label.startswith("floor") else floor_secs,
            floor_name="ansible.builtin.ping play",
            target_spec=spec,
        )
    benchlib.print_table(bench.tables["lb_deploy"]["rows"])
    bench.write()


if __name__ == "__main__":
    main()
