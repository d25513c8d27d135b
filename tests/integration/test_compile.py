"""Compiling C sources: on the controller (action plugin, through ansible-playbook) and on the host (module)."""

import json
import os
import re
import shutil

import pytest
from harness import paths
from harness.runner import run_playbook
from harness.traffic import udp_count

pytestmark = [pytest.mark.kernel]

SRC = os.path.join(paths.REPO, "tests", "bpf")

PLAYBOOK = """
- hosts: lab
  gather_facts: false
  vars:
    base: {pin_root: "%(pin_root)s", state_dir: "%(state_dir)s", interfaces: [vb]}
  tasks:
    - name: XDP guard compiled on the controller
      ebpf.fleet.xdp_program:
        name: guard
        src: guard.c
        defines: {DROP_PORT: "{{ port }}"}
        pin_root: "{{ base.pin_root }}"
        state_dir: "{{ base.state_dir }}"
        interfaces: "{{ base.interfaces }}"
      register: xdp
    - name: TC counter compiled on the controller
      ebpf.fleet.tc_program:
        name: tccount
        src: tc_count.c
        direction: ingress
        pin_root: "{{ base.pin_root }}"
        state_dir: "{{ base.state_dir }}"
        interfaces: "{{ base.interfaces }}"
      register: tc
    - name: Report
      ansible.builtin.debug:
        msg: "RESULT {{ {'xdp': xdp.changed, 'tc': tc.changed, 'xdp_id': xdp.attachments.vb.chain[0].prog_id} | to_json }}"
"""


@pytest.fixture
def play(netns, pin_root, state_dir, tmp_path):
    tx, rx = netns("tx"), netns("rx")
    tx.veth("va", "vb", peer_ns=rx, addr_a="192.0.2.1/24", addr_b="192.0.2.2/24")
    files = tmp_path / "files"
    files.mkdir()
    shutil.copy(os.path.join(SRC, "xdp_drop_udp.c"), files / "guard.c")
    shutil.copy(os.path.join(SRC, "drop_udp.h"), files / "drop_udp.h")  # the header guard.c includes
    shutil.copy(os.path.join(SRC, "tc_count.c"), files / "tc_count.c")
    (tmp_path / "play.yml").write_text(PLAYBOOK % {"pin_root": pin_root, "state_dir": state_dir})
    (tmp_path / "inventory.ini").write_text("[lab]\nlabhost ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % rx.name)

    class Play:
        pass

    p = Play()
    p.tx, p.rx, p.dir, p.pin_root, p.state_dir = tx, rx, tmp_path, pin_root, state_dir

    def run(port, check=False, diff=False):
        proc = run_playbook(str(tmp_path / "play.yml"), inventory=str(tmp_path / "inventory.ini"), extra_vars={"port": port}, check=check, diff=diff)
        found = re.search(r"RESULT (\{.*\})", proc.stdout)
        return proc, json.loads(found.group(1).replace('\\"', '"')) if found else None

    p.run = run
    return p


def xdp_prog_id(ns, ifname="vb"):
    link = json.loads(ns.ip("-j", "-d", "link", "show", ifname).stdout)[0]
    return link.get("xdp", {}).get("prog", {}).get("id", 0)


@pytest.mark.playbook
def test_playbook_compiles_on_controller_and_is_idempotent_with_check_and_diff(play):
    proc, res = play.run(9999)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert res["xdp"] is True and res["tc"] is True, proc.stdout
    first_id = res["xdp_id"]
    assert xdp_prog_id(play.rx) == first_id
    record = json.load(open(os.path.join(play.state_dir, "guard", "deployment.json")))
    assert record["compiler"] == "controller" and str(record["defines"]["DROP_PORT"]) == "9999"
    sent, received = udp_count(play.tx, play.rx, "192.0.2.2", 9999)
    assert sent > 0 and received == 0
    # same source, same defines: the object's checksum is the same, nothing to do
    proc, res = play.run(9999)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert res["xdp"] is False and res["tc"] is False, proc.stdout
    assert "changed=0" in proc.stdout
    # check + diff with another port: predicted, shown, not done
    proc, res = play.run(9998, check=True, diff=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert res["xdp"] is True and res["tc"] is False
    assert "(to be loaded)" in proc.stdout and "deployment guard" in proc.stdout
    assert res["xdp_id"] == 0  # predicted: not loaded
    assert xdp_prog_id(play.rx) == first_id
    sent, received = udp_count(play.tx, play.rx, "192.0.2.2", 9999)
    assert sent > 0 and received == 0


@pytest.mark.playbook
def test_compile_error_fails_before_the_host_changes(play):
    (play.dir / "files" / "guard.c").write_text("int broken(void) { return ; }\n")
    proc, _res = play.run(9999)
    assert proc.returncode != 0
    assert "clang on the controller failed" in proc.stdout and "guard.c" in proc.stdout
    assert xdp_prog_id(play.rx) == 0
    assert not os.path.exists(os.path.join(play.pin_root, "guard"))


def test_host_compile_through_the_module(netns, pin_root, state_dir, run_module):
    ns = netns("hc")
    ns.veth("va", "vb")
    args = dict(
        name="hostbuilt",
        src=os.path.join(SRC, "xdp_drop_udp.c"),
        compiler="host",
        include_dirs=[paths.BPF_INCLUDE],
        defines={"VERSION": 3},
        interfaces=["vb"],
        pin_root=pin_root,
        state_dir=state_dir,
    )
    res = run_module("xdp_program", args, netns=ns)
    assert res.changed and not res.failed, res
    assert xdp_prog_id(ns) == res["attachments"]["vb"]["chain"][0]["prog_id"]
    assert not run_module("xdp_program", args, netns=ns).changed
    res = run_module("xdp_program", dict(args, include_dirs=[]), netns=ns)
    assert res.failed and "clang failed" in res["msg"] and "fleet/types.h" in res["stderr"], res
