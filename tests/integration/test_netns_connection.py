"""The netns connection plugin runs tasks inside a lab host's network namespace."""

import json
import os

import pytest

from harness.runner import run_playbook

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]


def test_tasks_run_in_the_namespace_and_see_its_links(netns, tmp_path):
    host = netns("c")
    host.veth("lab0", "lab1")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[lab]\nlabhost ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % host.name)
    out = tmp_path / "links.json"
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: lab\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.command: ip -j link show\n      register: links\n      changed_when: false\n"
        "    - ansible.builtin.copy:\n        content: '{{ links.stdout }}'\n        dest: %s\n" % out)
    proc = run_playbook(str(playbook), inventory=str(inventory))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {link["ifname"] for link in json.loads(out.read_text())}
    assert names == {"lo", "lab0", "lab1"}


def test_missing_namespace_fails_naming_it(tmp_path):
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("ghost ansible_connection=ebpf.fleet.netns ansible_netns=ebft-does-not-exist\n")
    playbook = tmp_path / "play.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n")
    proc = run_playbook(str(playbook), inventory=str(inventory))
    assert proc.returncode != 0
    assert "ebft-does-not-exist" in proc.stdout and "does not exist" in proc.stdout
    assert not os.path.exists("/run/netns/ebft-does-not-exist")
