"""The collection's playbooks run against lab hosts that are network namespaces."""

import os

import pytest

from harness import paths
from harness.runner import run_playbook

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]


def test_check_xdp_support_reports_each_lab_host(netns, tmp_path):
    host_a, host_b = netns("pa"), netns("pb")
    host_a.veth("v0", "v1")
    host_b.bridge("br0")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("a ansible_connection=ebpf.fleet.netns ansible_netns=%s\n"
                         "b ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % (host_a.name, host_b.name))
    playbook = os.path.join(paths.REPO, "playbooks", "check_xdp_support.yml")
    proc = run_playbook(playbook, inventory=str(inventory))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "v0: driver=veth" in proc.stdout and "native=yes" in proc.stdout
    assert "br0: driver=bridge" in proc.stdout
    # require native: the bridge-only host fails, naming the interface
    proc = run_playbook(playbook, inventory=str(inventory), extra_vars={"xdp_check_require": "native"})
    assert proc.returncode != 0
    assert "br0" in proc.stdout
