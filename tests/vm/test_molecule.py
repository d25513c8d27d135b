"""The molecule scenarios (extensions/molecule/, docs/molecule.md) through `make molecule`, one test per scenario:
- default: a Debian 12 VM under qemu, converged with playbooks/deploy_xdp.yml and checked by its verify.yml (native
  XDP on virtio_net, traffic verdicts and counters, the egress program, metrics, a real reboot, a lockout the host
  reverts by itself);
- fleet: a load balancer and two backends (real TCP connections spread over them), libxdp's dispatcher with
  xdp-loader, a bcc-compiled program.

`make test` runs them after the integration tests (`make vm`: VM_WORKERS scenarios at a time); alone:
    .venv/bin/python -m pytest -q -s tests/vm/test_molecule.py -k fleet
Each step's duration is printed and written to build/molecule/<scenario>.steps.json.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from harness import paths

# molecule colours its failed steps even with NO_COLOR ("\x1b[31mExecuted: Failed\x1b[0m")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# molecule's own log lines ("WARNING  [default > ...]") are not Ansible's; these are
ANSIBLE_WARNING = re.compile(r"\[(?:DEPRECATION )?WARNING\]")
# shared/create.yml says where each VM's data NIC is: "... (tap ebfm...t0 on br0 in namespace ebfm1a2b3c)"
NAMESPACE = re.compile(r"in namespace (ebfm[0-9a-f]{6})\b")
HOSTS = {"default": ["ebpf-fleet-vm"], "fleet": ["lb1", "web1", "web2"]}


def step_pattern(scenario: str) -> re.Pattern:
    return re.compile(r"\[%s > ([a-z_]+)\] (?:Executing$|Executed: (\w+))" % re.escape(scenario))


def run_make_molecule(scenario: str) -> tuple[int, list[str], dict]:
    """Run `make -s molecule MOLECULE_SCENARIOS=<scenario>`, echo its output, time each molecule step."""
    pattern = step_pattern(scenario)
    lines: list[str] = []
    steps: dict = {}
    started: dict = {}
    begin = time.monotonic()
    proc = subprocess.Popen(
        ["make", "-s", "molecule", "MOLECULE_SCENARIOS=%s" % scenario], cwd=paths.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        line = ANSI.sub("", line)
        lines.append(line.rstrip("\n"))
        match = pattern.search(line.strip())
        if not match:
            continue
        step, outcome = match.groups()
        now = time.monotonic()
        if outcome is None:
            started[step] = now
        elif step in started:
            # destroy runs twice in the sequence: keep each run
            steps.setdefault(step, []).append({"seconds": round(now - started.pop(step), 1), "outcome": outcome})
    rc = proc.wait()
    steps["total"] = [{"seconds": round(time.monotonic() - begin, 1), "outcome": "rc %d" % rc}]
    steps_file = os.path.join(paths.BUILD, "molecule", "%s.steps.json" % scenario)
    os.makedirs(os.path.dirname(steps_file), exist_ok=True)
    with open(steps_file, "w", encoding="utf-8") as handle:
        json.dump(steps, handle, indent=2)
    return rc, lines, steps


def section(lines: list[str], scenario: str, step: str) -> list[str]:
    """The output lines of one molecule step (from its 'Executing' line to its 'Executed' line)."""
    pattern = step_pattern(scenario)
    out: list[str] = []
    inside = False
    for line in lines:
        match = pattern.search(line.strip())
        if match and match.group(1) == step:
            inside = match.group(2) is None
            continue
        if inside:
            out.append(line)
    return out


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("scenario", sorted(HOSTS))
def test_molecule_scenario_converges_idempotently_without_warnings_verifies_and_leaves_nothing(scenario):
    rc, lines, steps = run_make_molecule(scenario)
    print("\n== molecule %s steps (s): " % scenario + ", ".join("%s %s" % (k, "+".join(str(r["seconds"]) for r in v)) for k, v in steps.items()))
    assert rc == 0, "make molecule failed (rc %d); log in build/molecule/%s.log" % (rc, scenario)
    for step in ("create", "prepare", "converge", "idempotence", "verify", "destroy"):
        assert step in steps and all(r["outcome"] == "Successful" for r in steps[step]), (step, steps.get(step))
    converge, idempotence = section(lines, scenario, "converge"), section(lines, scenario, "idempotence")
    for host in HOSTS[scenario]:
        assert any(re.search(r"^%s\s+: ok=\d+\s+changed=[1-9]" % host, line) for line in converge), "converge changed nothing on %s" % host
        assert any(re.search(r"^%s\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0" % host, line) for line in idempotence), idempotence[-5:]
    warnings = [line for line in lines if ANSIBLE_WARNING.search(line)]
    assert warnings == [], warnings
    tracebacks = [line for line in lines if "Traceback (most recent call last)" in line]
    assert tracebacks == [], tracebacks
    # molecule's prerun would install the collection into ~/.ansible/collections; the scenarios use build/collections
    assert not os.path.exists(os.path.expanduser("~/.ansible/collections/ansible_collections/ebpf"))
    # destroy removed the run's namespace (and the taps and the bridge in it) and its qemu processes
    created = set(NAMESPACE.findall("\n".join(section(lines, scenario, "create"))))
    assert len(created) == 1, created
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    assert created.isdisjoint(namespaces), namespaces
    qemu = subprocess.run(["pgrep", "-af", "qemu-system-x86_64 -name (%s) " % "|".join(HOSTS[scenario])], capture_output=True, text=True, check=False)
    assert qemu.stdout == "", qemu.stdout
