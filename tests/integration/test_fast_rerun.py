"""deploy_xdp.yml's fast re-run: a host whose fingerprint matches the declaration skips the roles; anything that
moved (a map entry, the program, a file the roles installed, the declaration, a rollback) sends it through the
roles again, which repair it. Lab hosts are network namespaces; every run goes through ansible-playbook and must
print no [WARNING]."""

import os
import re
import subprocess

import pytest
from harness import paths
from harness.netns_lab import NetnsLab as Lab
from harness.runner import run_playbook

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

DEPLOY = os.path.join(paths.REPO, "playbooks", "deploy_xdp.yml")
ROLLBACK = os.path.join(paths.REPO, "playbooks", "rollback.yml")
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
EDGES = {"deploy_xdp_hosts": "edges"}
ROLE_TASK = "TASK [ebpf.fleet."  # a task of a role: printed only when the roles run


def run(lab, extra=None, env=None, **kw):
    # verbosity 1: the fingerprint check's result (its reasons) is in the output a failed assertion shows
    env = dict({"ANSIBLE_VERBOSITY": "1"}, **(env or {}))
    proc = run_playbook(DEPLOY, inventory=lab.inventory, extra_vars=dict(EDGES, **(extra or {})), env=env, **kw)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out
    changed = {host: int(n) for host, n, _u, _f in RECAP.findall(proc.stdout)}
    return Run(changed["edge1"], ROLE_TASK in proc.stdout, proc.stdout)


class Run(tuple):
    """(changed, roles ran, output); compares as (changed, roles ran), and shows the output when it differs."""

    def __new__(cls, changed, roles, output):
        run = super().__new__(cls, (changed, roles))
        run.output = output
        return run

    def __repr__(self):
        return repr(tuple(self))

    def __eq__(self, other):
        same = tuple(self) == tuple(other)
        if not same:  # pytest cuts a long repr: the output (the fingerprint's reasons) goes to the captured stdout
            print(self.output)
        return same

    __hash__ = tuple.__hash__


def mgmt_ports(lab) -> list:
    """The ports the filter's management port array marks (an array: every port has an element, 0 is unmarked)."""
    entries = lab.info("edge1", contents=True, max_entries=70000, query="deployments.filter.maps.filter_mgmt_ports.entries")["query_result"]
    return sorted(entry["key"] for entry in entries if entry["value"])


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path, 1)
    try:
        proc = lab.sh("up")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield lab
    finally:
        lab.sh("down")


def test_a_rerun_skips_the_roles_until_something_moves_and_then_repairs_it(lab):
    changed, roles = run(lab)
    assert changed > 0 and roles
    deployed = mgmt_ports(lab)

    # the same declaration again: one check per host, changed=0; check mode too
    assert run(lab) == (0, False)
    assert run(lab, check=True, diff=True) == (0, False)

    # an entry written by hand into a declared map: the roles run and take it out
    pin = os.path.join(lab.pin_root("edge1"), "filter", "maps", "filter_mgmt_ports")
    subprocess.run(["bpftool", "map", "update", "pinned", pin, "key", "hex", "17", "00", "00", "00", "value", "hex", "01", "00", "00", "00"], check=True)
    assert mgmt_ports(lab) != deployed
    changed, roles = run(lab)
    assert changed > 0 and roles
    assert mgmt_ports(lab) == deployed
    assert run(lab) == (0, False)

    # the program detached by hand: attached again
    link = os.path.join(lab.pin_root("edge1"), "_hooks", "xdp@lab0", "link")
    subprocess.run(["bpftool", "link", "detach", "pinned", link], check=True)
    assert lab.xdp("edge1") is None
    changed, roles = run(lab)
    assert changed > 0 and roles
    assert lab.xdp("edge1") is not None
    assert run(lab) == (0, False)

    # a unit file the role installed, edited: written again
    unit = os.path.join(lab.dir, "state", "edge1", "etc", "systemd", "system", "ebpf-fleet-metrics.timer")
    with open(unit, "a", encoding="utf-8") as handle:
        handle.write("# edited by hand\n")
    changed, roles = run(lab)
    assert changed > 0 and roles
    assert "edited by hand" not in open(unit, encoding="utf-8").read()
    assert run(lab) == (0, False)

    # with the fast re-run off, the roles run (and change nothing)
    assert run(lab, {"deploy_xdp_fast_rerun": False}) == (0, True)


def test_a_changed_declaration_a_partial_run_and_a_rollback_each_take_the_roles(lab):
    run(lab)
    assert run(lab) == (0, False)
    more = {"xdp_filter_mgmt_ports": [22, 2222]}

    # check mode of a changed declaration predicts the change and records nothing
    changed, roles = run(lab, more, check=True)
    assert changed > 0 and roles
    # a run of some tags deploys the change but records no fingerprint: the next full run runs the roles again
    changed, roles = run(lab, more, env={"ANSIBLE_RUN_TAGS": "xdp_filter"})
    assert changed > 0 and roles
    assert mgmt_ports(lab) == [22, 2222]
    assert run(lab, more) == (0, True)
    assert run(lab, more) == (0, False)

    # rollback.yml returns the filter to its previous version: the records moved, so the next deploy runs the roles
    back = run_playbook(ROLLBACK, inventory=lab.inventory, extra_vars={"rollback_hosts": "edges"})
    assert back.returncode == 0, back.stdout + back.stderr
    changed, roles = run(lab, more)
    assert changed > 0 and roles
    assert run(lab, more) == (0, False)
