"""bpf_map through ansible-playbook: entries from a file on the controller, copied by the action plugin."""

import os

import pytest
from harness import paths
from harness.runner import run_playbook

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps.map_codec import read_entries

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

PLAYBOOK = """
- hosts: lab
  gather_facts: false
  tasks:
    - name: Sync the block list from the controller's file
      ebpf.fleet.bpf_map:
        name: maps
        map: prefixes_v4
        pin_root: "%(pin_root)s"
        entries_src: deny.txt
        value: drop
        mode: sync
"""


@pytest.fixture
def lab(pin_root, netns, tmp_path):
    """A lab host (namespace) and the fixture maps pinned under pin_root/maps/maps/."""
    host = netns("mp")
    obj = libbpf.BpfObject.open(paths.bpf_object("map_types"))
    try:
        obj.load()
        bpffs.pin(obj.map("prefixes_v4").fd, bpffs.map_pin(pin_root, "maps", "prefixes_v4"))
        (tmp_path / "files").mkdir()
        (tmp_path / "inventory.ini").write_text("lab ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % host.name)
        (tmp_path / "play.yml").write_text(PLAYBOOK % {"pin_root": pin_root})
        yield tmp_path
    finally:
        obj.close()


def play(lab, *flags):
    proc = run_playbook(str(lab / "play.yml"), inventory=str(lab / "inventory.ini"), check="--check" in flags, diff="--diff" in flags)
    return proc.returncode, proc.stdout + proc.stderr


def contents(pin_root):
    fd = libbpf.obj_get(bpffs.map_pin(pin_root, "maps", "prefixes_v4"))
    try:
        return {entry["key"]: entry["value"] for entry in read_entries(fd)}
    finally:
        os.close(fd)


def test_entries_src_is_copied_from_the_controller_and_a_rerun_changes_nothing(lab, pin_root):
    cidrs = ["10.%d.%d.0/24" % (i >> 8, i & 255) for i in range(20000)]
    (lab / "files" / "deny.txt").write_text("\n".join(cidrs) + "\n")
    rc, out = play(lab)
    assert rc == 0 and "changed=1" in out, out
    assert len(contents(pin_root)) == 20000 and contents(pin_root)["10.0.7.0/24"] == "drop"
    rc, out = play(lab)
    assert rc == 0 and "changed=0" in out, out

    # check mode with diff: the plan in the operator's notation, nothing written
    (lab / "files" / "deny.txt").write_text("\n".join(cidrs[1:] + ["192.0.2.0/24"]) + "\n")
    rc, out = play(lab, "--check", "--diff")
    assert rc == 0 and "changed=1" in out, out
    assert "192.0.2.0/24" in out and "10.0.0.0/24" in out
    assert "192.0.2.0/24" not in contents(pin_root)


def test_a_bad_line_names_the_controllers_file_and_nothing_is_written(lab, pin_root):
    (lab / "files" / "deny.txt").write_text("203.0.113.0/24\n203.0.113.1/24\n")
    rc, out = play(lab)
    assert rc != 0
    assert "deny.txt line 2" in out and "203.0.113.0/24" in out, out
    assert "entries-deny.txt" not in out  # the host's temporary copy is not what the operator sees
    assert contents(pin_root) == {}


def test_deploy_xdp_check_diff_on_a_host_never_deployed_predicts_every_map_and_writes_nothing(pin_root, netns, tmp_path):
    """playbooks/deploy_xdp.yml --check --diff before the first deploy: no pins, no records. Every map task
    predicts its entries as declared instead of failing on the missing pin."""
    host = netns("nd")
    host.veth("nda", "ndb")
    fresh_pins = os.path.join(pin_root, "fresh")
    state = str(tmp_path / "state")
    (tmp_path / "inventory.ini").write_text(
        "[xdp_filter]\nedge ansible_connection=ebpf.fleet.netns ansible_netns=%s ebpf_fleet_pin_root=%s "
        "ebpf_fleet_state_dir=%s xdp_filter_interfaces='[\"nda\"]'\n" % (host.name, fresh_pins, state)
    )
    # bpf_host would check this machine's own /etc (this host is not a lab host with paths of its own)
    proc = run_playbook(
        os.path.join(paths.REPO, "playbooks", "deploy_xdp.yml"),
        inventory=str(tmp_path / "inventory.ini"),
        check=True,
        diff=True,
        extra_vars={"xdp_filter_port_rules": [{"proto": "udp", "port": 53, "action": "drop"}]},
        env={"ANSIBLE_SKIP_TAGS": "bpf_host"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "[WARNING]" not in out and "[DEPRECATION WARNING]" not in out, out
    assert "failed=0" in out
    assert "53: " in out and "default_verdict" in out  # the port rule and the config, predicted in the diff
    # no map was pinned or written (whether xdp_program's check mode creates folders is its own test's concern)
    assert not os.path.exists(os.path.join(fresh_pins, "filter", "maps"))


MAPS_PLAYBOOK = """
- hosts: lab
  gather_facts: false
  tasks:
    - name: Declare two maps in one task
      ebpf.fleet.bpf_map:
        name: maps
        pin_root: "%(pin_root)s"
        mode: sync
        value: drop
        maps:
          - map: policy
            entries: {0: pass, 1: "{{ second_verdict | default('drop') }}"}
          - map: prefixes_v4
            entries_src: deny.txt
"""


def test_maps_declares_several_maps_in_one_task_and_a_bad_one_leaves_all_untouched(lab, pin_root):
    obj = libbpf.BpfObject.open(paths.bpf_object("map_types"))
    try:
        obj.load()
        bpffs.pin(obj.map("policy").fd, bpffs.map_pin(pin_root, "maps", "policy"))
        (lab / "files" / "deny.txt").write_text("198.51.100.0/24\n203.0.113.0/24\n")
        (lab / "play.yml").write_text(MAPS_PLAYBOOK % {"pin_root": pin_root})

        def policy():
            fd = libbpf.obj_get(bpffs.map_pin(pin_root, "maps", "policy"))
            try:
                return {entry["key"]: entry["value"] for entry in read_entries(fd)}
            finally:
                os.close(fd)

        rc, out = play(lab, "--check", "--diff")  # predicted, with a diff per map named by its pin
        assert rc == 0 and "changed=1" in out and "[WARNING]" not in out, out
        assert bpffs.map_pin(pin_root, "maps", "prefixes_v4") in out and "198.51.100.0/24: drop" in out, out
        assert contents(pin_root) == {} and policy().get(1) != "drop"

        rc, out = play(lab)
        assert rc == 0 and "changed=1" in out and "[WARNING]" not in out, out
        assert contents(pin_root) == {"198.51.100.0/24": "drop", "203.0.113.0/24": "drop"}
        assert policy()[0] == "pass" and policy()[1] == "drop"
        rc, out = play(lab)
        assert rc == 0 and "changed=0" in out, out

        # the second map's file has a bad line: the first map, checked fine, is not written either
        (lab / "files" / "deny.txt").write_text("192.0.2.0/24\n192.0.2.1/24\n")
        proc = run_playbook(str(lab / "play.yml"), inventory=str(lab / "inventory.ini"), extra_vars={"second_verdict": "pass"})
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "maps[1] (prefixes_v4)" in out and "deny.txt" in out, out
        assert "Traceback" not in out
        assert policy()[1] == "drop" and "192.0.2.0/24" not in contents(pin_root)
    finally:
        obj.close()
