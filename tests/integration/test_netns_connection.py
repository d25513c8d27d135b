"""The netns connection plugin runs tasks inside a lab host's network namespace."""

import json
import os

import pytest
from harness.netns import unique
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
        "    - ansible.builtin.copy:\n        content: '{{ links.stdout }}'\n        dest: %s\n" % out
    )
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


def _run_ping(tmp_path, netns_name):
    inventory = tmp_path / "inventory.yml"
    host = {"ansible_connection": "ebpf.fleet.netns", "ansible_netns": netns_name}
    inventory.write_text(json.dumps({"all": {"hosts": {"lab": host}}}))
    playbook = tmp_path / "play.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n")
    return run_playbook(str(playbook), inventory=str(inventory))


@pytest.mark.parametrize("name", ["..", ".", "../netns", "a/b", "x;reboot", "$(id)", "n" * 65])
def test_namespace_names_that_resolve_to_something_else_are_refused(tmp_path, name):
    """'..' would make nsenter enter /run (not a namespace), '/' another folder: refused naming netns and the
    value, with what a name must be; no task runs (the ping never reports ok)."""
    proc = _run_ping(tmp_path, name)
    assert proc.returncode != 0
    assert "netns=" in proc.stdout and "is not a network namespace name" in proc.stdout, proc.stdout
    assert "expected the name of a network namespace in /run/netns" in proc.stdout
    assert "ok=1" not in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


def test_a_namespace_entry_that_links_outside_run_netns_is_refused(tmp_path):
    """A /run/netns entry that is a symlink to a file elsewhere resolves to something else: refused, naming
    where it leads; nsenter is never run on it."""
    name = unique("lnk")
    path = os.path.join("/run/netns", name)
    os.makedirs("/run/netns", exist_ok=True)
    target = tmp_path / "elsewhere"
    target.write_text("")
    os.symlink(str(target), path)
    try:
        proc = _run_ping(tmp_path, name)
    finally:
        os.unlink(path)
    assert proc.returncode != 0
    assert "resolves to %s, outside /run/netns" % target in proc.stdout, proc.stdout
