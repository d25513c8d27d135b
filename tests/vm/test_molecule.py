"""The molecule scenario (extensions/molecule/default, docs/molecule.md) through `make molecule`: a Debian 12 VM
under qemu, converged with playbooks/deploy_xdp.yml and checked by its verify.yml (native XDP on virtio_net,
traffic verdicts and counters, the egress program, metrics, a real reboot, a lockout the host reverts by itself).

Not part of `make test` yet (11 min under TCG on a quiet 2-core machine, half an hour beside other work): run it with
    .venv/bin/python -m pytest -q -s tests/vm/test_molecule.py
Each step's duration is printed and written to build/molecule/steps.json.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from harness import paths

STEP = re.compile(r"\[default > ([a-z_]+)\] (?:Executing$|Executed: (\w+))")
# molecule colours its failed steps even with NO_COLOR ("\x1b[31mExecuted: Failed\x1b[0m")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STEPS_FILE = os.path.join(paths.BUILD, "molecule", "steps.json")
# molecule's own log lines ("WARNING  [default > ...]") are not Ansible's; these are
ANSIBLE_WARNING = re.compile(r"\[(?:DEPRECATION )?WARNING\]")


def run_make_molecule() -> tuple[int, list[str], dict]:
    """Run `make -s molecule`, echo its output, and time each molecule step (seconds, and how it ended)."""
    lines: list[str] = []
    steps: dict = {}
    started: dict = {}
    begin = time.monotonic()
    proc = subprocess.Popen(["make", "-s", "molecule"], cwd=paths.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        line = ANSI.sub("", line)
        lines.append(line.rstrip("\n"))
        match = STEP.search(line.strip())
        if not match:
            continue
        step, outcome = match.groups()
        now = time.monotonic()
        if outcome is None:
            started[step] = now
        elif step in started:
            # cleanup and destroy run twice in the sequence: keep each run
            steps.setdefault(step, []).append({"seconds": round(now - started.pop(step), 1), "outcome": outcome})
    rc = proc.wait()
    steps["total"] = [{"seconds": round(time.monotonic() - begin, 1), "outcome": "rc %d" % rc}]
    os.makedirs(os.path.dirname(STEPS_FILE), exist_ok=True)
    with open(STEPS_FILE, "w", encoding="utf-8") as handle:
        json.dump(steps, handle, indent=2)
    return rc, lines, steps


def section(lines: list[str], step: str) -> list[str]:
    """The output lines of one molecule step (from its 'Executing' line to its 'Executed' line)."""
    out: list[str] = []
    inside = False
    for line in lines:
        match = STEP.search(line.strip())
        if match and match.group(1) == step:
            inside = match.group(2) is None
            continue
        if inside:
            out.append(line)
    return out


@pytest.mark.timeout(3600)
def test_molecule_default_scenario_converges_idempotently_without_warnings_and_verifies():
    rc, lines, steps = run_make_molecule()
    print("\n== molecule steps (s): " + ", ".join("%s %s" % (k, "+".join(str(r["seconds"]) for r in v)) for k, v in steps.items()))
    assert rc == 0, "make molecule failed (rc %d); log in build/molecule/molecule.log" % rc
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert step in steps and all(r["outcome"] == "Successful" for r in steps[step]), (step, steps.get(step))
    converge, idempotence = section(lines, "converge"), section(lines, "idempotence")
    assert any(re.search(r"ebpf-fleet-vm\s+: ok=\d+\s+changed=[1-9]", line) for line in converge), "converge changed nothing"
    assert any(re.search(r"ebpf-fleet-vm\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", line) for line in idempotence), idempotence[-5:]
    warnings = [line for line in lines if ANSIBLE_WARNING.search(line)]
    assert warnings == [], warnings
    tracebacks = [line for line in lines if "Traceback (most recent call last)" in line]
    assert tracebacks == [], tracebacks


def test_no_collection_was_installed_into_the_users_collections_and_no_namespace_is_left():
    # molecule's prerun would install the collection into ~/.ansible/collections; the scenario uses build/collections
    assert not os.path.exists(os.path.expanduser("~/.ansible/collections/ansible_collections/ebpf"))
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    assert [name for name in namespaces if name.startswith("ebfm")] == []
