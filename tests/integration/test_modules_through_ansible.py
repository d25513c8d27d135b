"""Every module through ansible-playbook (what the controller does to a result is tested too): no [WARNING] or
[DEPRECATION WARNING] on a changed run, a re-run or check mode; the group's shared options set once with
module_defaults; and deploy_xdp.yml in check mode on a host never deployed."""

import json
import os
import re
import shutil

import pytest
from harness import paths
from harness.runner import run_playbook

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
WARNING = re.compile(r"\[(DEPRECATION )?WARNING\]")

GROUP_PLAYBOOK = """
- hosts: lab
  gather_facts: false
  module_defaults:
    group/ebpf.fleet.ebpf:
      pin_root: "%(pin_root)s"
      state_dir: "%(state_dir)s"
  tasks:
    - name: A checkpoint of the deployments before the change (the host reverts unless it is confirmed)
      ebpf.fleet.bpf_checkpoint:
        state: armed
        timeout: 60
      register: checkpoint
    - name: XDP support of the interface
      ebpf.fleet.xdp_support:
        interfaces: [vb]
        require: native
    - name: An XDP program
      ebpf.fleet.xdp_program:
        name: guard
        object: "%(xdp_object)s"
        interfaces: [vb]
      register: xdp
    - name: A TC program
      ebpf.fleet.tc_program:
        name: count
        object: "%(tc_object)s"
        direction: ingress
        interfaces: [vb]
    - name: Map entries
      ebpf.fleet.bpf_map:
        name: maps
        map: prefixes_v4
        entries: ["192.0.2.0/24"]
        value: drop
        mode: sync
    - name: Confirm over a fresh connection and make the change the new state
      ebpf.fleet.bpf_checkpoint:
        state: committed
        token: "{{ checkpoint.token }}"
      register: committed
    - name: Record the host's fingerprint (bookkeeping, never a change)
      ebpf.fleet.bpf_fingerprint:
        state: recorded
        digest: 0123456789abcdef
    - name: The host is as the fingerprint says
      ebpf.fleet.bpf_fingerprint:
        digest: 0123456789abcdef
      register: fingerprint
    - name: What is deployed
      ebpf.fleet.bpf_info:
        interfaces: [vb]
      register: info
    - name: The defaults reached every module
      ansible.builtin.assert:
        that:
          - info.deployments.guard.version == 1
          - info.deployments.count is defined
          - not xdp.changed or xdp.applied['xdp@vb'].action == 'attach'
          - (checkpoint.token | length > 0) != ansible_check_mode
          - committed.deployments == (['count', 'guard'] if xdp.changed and not ansible_check_mode else [])
          - fingerprint.matches and fingerprint.reasons == []
        quiet: true
"""


def recap(proc) -> dict:
    return {host: tuple(int(n) for n in nums) for host, *nums in RECAP.findall(proc.stdout)}


def assert_clean(proc):
    """The run succeeded and Ansible printed no warning or deprecation."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert not WARNING.search(output), output


@pytest.fixture
def group_lab(netns, pin_root, state_dir, tmp_path):
    host = netns("ga")
    host.veth("va", "vb")
    obj = libbpf.BpfObject.open(paths.bpf_object("map_types"))
    try:
        obj.load()
        bpffs.pin(obj.map("prefixes_v4").fd, bpffs.map_pin(pin_root, "maps", "prefixes_v4"))
        (tmp_path / "inventory.ini").write_text("[lab]\nlabhost ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % host.name)
        (tmp_path / "play.yml").write_text(
            GROUP_PLAYBOOK
            % {"pin_root": pin_root, "state_dir": state_dir, "xdp_object": paths.bpf_object("xdp_drop_udp"), "tc_object": paths.bpf_object("tc_count")}
        )
        yield tmp_path
    finally:
        obj.close()


def test_every_module_through_ansible_with_group_defaults_and_no_warning(group_lab):
    def play(**kw):
        return run_playbook(str(group_lab / "play.yml"), inventory=str(group_lab / "inventory.ini"), **kw)

    first = play()
    assert_clean(first)
    assert recap(first)["labhost"][0] == 3  # xdp_program, tc_program, bpf_map
    again = play()
    assert_clean(again)
    assert recap(again)["labhost"] == (0, 0, 0)
    check = play(check=True, diff=True)
    assert_clean(check)
    assert recap(check)["labhost"] == (0, 0, 0)


# ---------------------------------------------------------------- deploy_xdp.yml in check mode, never deployed


def listing(*roots) -> list:
    found = []
    for root in roots:
        for top, dirs, files in os.walk(root):
            found += [os.path.join(top, name) for name in dirs + files]
        if os.path.lexists(root):
            found.append(root)
    return sorted(found)


def test_deploy_xdp_check_mode_on_a_host_never_deployed_predicts_and_writes_nothing(netns, pin_root, tmp_path):
    host = netns("cm")
    host.veth("va", "vb")
    fresh_pins = os.path.join(pin_root, "edge")
    fresh_state = str(tmp_path / "state" / "edge")
    (tmp_path / "inventory.ini").write_text(
        "[xdp_filter]\nedge ansible_connection=ebpf.fleet.netns ansible_netns=%s xdp_filter_interfaces='[\"vb\"]' "
        "ebpf_fleet_pin_root=%s ebpf_fleet_state_dir=%s\n" % (host.name, fresh_pins, fresh_state)
    )
    # bpf_host would check this machine's own /etc (this host is not a lab host with paths of its own)
    proc = run_playbook(
        os.path.join(paths.REPO, "playbooks", "deploy_xdp.yml"),
        inventory=str(tmp_path / "inventory.ini"),
        check=True,
        diff=True,
        env={"ANSIBLE_SKIP_TAGS": "bpf_host"},
    )
    output = proc.stdout + proc.stderr
    # the program side: the filter is predicted, to be loaded on vb
    task = output.split("TASK [ebpf.fleet.xdp_filter : Deploy the filter program]", 1)[1].split("TASK [", 1)[0]
    assert "changed: [edge]" in task, output
    assert "1. xdp_filter (deployment filter, priority 10)" in task and "(to be loaded)" in task, task
    # nothing written: no pin folder, no state folder, no lock file
    assert listing(pin_root) == [pin_root], listing(pin_root)
    assert not os.path.exists(os.path.dirname(fresh_state))
    assert_clean(proc)
    assert recap(proc)["edge"][1:] == (0, 0)  # unreachable, failed


# ---------------------------------------------------------------- idempotence from any directory

IDEMPOTENCE_PLAYBOOK = """
- hosts: lab
  gather_facts: false
  tasks:
    - name: XDP guard compiled on the controller
      ebpf.fleet.xdp_program:
        name: guard
        src: guard.c
        include_dirs: [headers]
        defines: {DROP_PORT: 9999}
        interfaces: [vb]
        pin_root: "%(pin_root)s"
        state_dir: "%(state_dir)s"
"""


def write_project(folder, pin_root, state_dir):
    """A playbook folder: play.yml, files/guard.c (+ the header it includes), files/headers/."""
    files = folder / "files"
    (files / "headers").mkdir(parents=True)
    shutil.copy(os.path.join(paths.REPO, "tests", "bpf", "xdp_drop_udp.c"), files / "guard.c")
    shutil.copy(os.path.join(paths.REPO, "tests", "bpf", "drop_udp.h"), files / "drop_udp.h")
    (files / "headers" / "unused.h").write_text("/* found through include_dirs */\n")
    (folder / "play.yml").write_text(IDEMPOTENCE_PLAYBOOK % {"pin_root": pin_root, "state_dir": state_dir})


def copy_collection(dest) -> str:
    """The collection copied into another collections path (as `ansible-galaxy collection install` would)."""
    root = dest / "ansible_collections" / "ebpf" / "fleet"
    for part in ("plugins", "meta", "bpf"):
        shutil.copytree(os.path.join(paths.REPO, part), root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(paths.REPO, "galaxy.yml"), root / "galaxy.yml")
    return str(dest)


def test_same_source_from_any_directory_runner_or_collections_path_changes_nothing(netns, pin_root, state_dir, tmp_path, monkeypatch):
    host = netns("id")
    host.veth("va", "vb")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[lab]\nlabhost ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % host.name)
    record = os.path.join(state_dir, "guard", "deployment.json")

    def sha256():
        with open(record, encoding="utf-8") as handle:
            rec = json.load(handle)
        return rec["object_sha256"], rec["version"]

    # controller one: a checkout in one folder, run from it
    one = tmp_path / "one"
    write_project(one, pin_root, state_dir)
    monkeypatch.chdir(one)
    first = run_playbook(str(one / "play.yml"), inventory=str(inventory))
    assert_clean(first)
    assert recap(first)["labhost"][0] == 1
    digest = sha256()

    # controller two: another checkout, deeper, run from elsewhere
    two = tmp_path / "elsewhere" / "other-user" / "checkout"
    write_project(two, pin_root, state_dir)
    monkeypatch.chdir(tmp_path / "elsewhere")
    second = run_playbook(str(two / "play.yml"), inventory=str(inventory))
    assert_clean(second)
    assert recap(second)["labhost"][0] == 0, second.stdout
    assert sha256() == digest

    # the collection from another collections path (the only one: build/collections is not on it)
    other_path = copy_collection(tmp_path / "collections2")
    third = run_playbook(str(two / "play.yml"), inventory=str(inventory), env={"ANSIBLE_COLLECTIONS_PATH": other_path, "PYTHONPATH": ""})
    assert_clean(third)
    assert recap(third)["labhost"][0] == 0, third.stdout
    assert sha256() == digest

    # ansible-runner: the project folder of a private data dir
    ansible_runner = pytest.importorskip("ansible_runner")
    private = tmp_path / "runner"
    write_project(private / "project", pin_root, state_dir)
    (private / "inventory").mkdir()
    shutil.copy(inventory, private / "inventory" / "hosts")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", os.path.dirname(paths.PYTHON) + os.pathsep + os.environ["PATH"])
    result = ansible_runner.run(
        private_data_dir=str(private),
        playbook="play.yml",
        quiet=True,
        envvars={"ANSIBLE_COLLECTIONS_PATH": paths.COLLECTIONS, "ANSIBLE_PYTHON_INTERPRETER": paths.PYTHON, "ANSIBLE_NOCOLOR": "1"},
    )
    output = result.stdout.read()
    assert result.rc == 0, output
    assert not WARNING.search(output), output
    assert result.stats["changed"].get("labhost", 0) == 0, output
    assert sha256() == digest
