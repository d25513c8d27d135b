"""compiler: bcc through ansible-playbook (the module respawns under the system Python, where bcc lives),
then found by bpf_info, then a libbpf program put in front of it."""

import json
import os
import re
import subprocess

import pytest
from harness import paths
from harness.runner import run_playbook
from harness.traffic import udp_count

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

SRC = os.path.join(paths.REPO, "tests", "bpf", "bcc", "xdp_bcc_drop.c")

PLAYBOOK = """
- hosts: lab
  gather_facts: false
  tasks:
    - name: A bcc-compiled XDP program
      ebpf.fleet.xdp_program:
        name: bccguard
        src: "%(src)s"
        compiler: bcc
        program: xdp_bcc_drop
        defines: {DROP_PORT: 9999}
        interfaces: [vb]
        pin_root: "%(pin_root)s"
        state_dir: "%(state_dir)s"
      register: deployed
    - name: What runs on vb
      ebpf.fleet.bpf_info:
        interfaces: [vb]
        contents: true
        pin_root: "%(pin_root)s"
        state_dir: "%(state_dir)s"
      register: info
    - name: Report
      ansible.builtin.debug:
        msg: "RESULT {{ {'changed': deployed.changed, 'info': info} | to_json }}"
"""


def bcc_available():
    return subprocess.run(["/usr/bin/python3", "-c", "import bcc"], capture_output=True, check=False).returncode == 0


def kernel_headers_present():
    """bcc needs /lib/modules/$(uname -r)/{build,source}; scripts/setup.sh links Debian's headers there."""
    moddir = "/lib/modules/%s" % os.uname().release
    return os.path.exists(os.path.join(moddir, "source", "include", "linux", "kconfig.h"))


@pytest.mark.skipif(not bcc_available(), reason="python3-bpfcc (bcc for the system Python) is not installed")
def test_bcc_program_attached_found_by_bpf_info_and_runs_last_in_a_chain(netns, pin_root, state_dir, tmp_path, run_module):
    tx, rx = netns("tx"), netns("rx")
    tx.veth("va", "vb", peer_ns=rx, addr_a="203.0.113.1/24", addr_b="203.0.113.2/24")
    (tmp_path / "play.yml").write_text(PLAYBOOK % {"src": SRC, "pin_root": pin_root, "state_dir": state_dir})
    (tmp_path / "inventory.ini").write_text("[lab]\nlabhost ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % rx.name)

    assert kernel_headers_present(), "kernel headers for bcc are missing: run make setup"

    def play():
        proc = run_playbook(str(tmp_path / "play.yml"), inventory=str(tmp_path / "inventory.ini"))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(re.search(r"RESULT (\{.*\})", proc.stdout).group(1).replace('\\"', '"'))

    first = play()
    assert first["changed"] is True
    [prog] = first["info"]["interfaces"]["vb"]["xdp"]["programs"]
    assert prog["managed"] is True and prog["deployment"] == "bccguard" and prog["name"] == "xdp_bcc_drop"
    dep = first["info"]["deployments"]["bccguard"]
    assert dep["compiler"] == "bcc" and dep["programs"]["xdp@vb"]["id"] == prog["id"]
    assert dep["maps"]["bcc_drops"]["type"] == "percpu_array"
    sent, received = udp_count(tx, rx, "203.0.113.2", 9999)
    assert sent > 0 and received == 0

    second = play()
    assert second["changed"] is False
    assert second["info"]["interfaces"]["vb"]["xdp"]["programs"][0]["id"] == prog["id"]
    [entry] = second["info"]["deployments"]["bccguard"]["maps"]["bcc_drops"]["entries"]
    value = entry["value"]
    drops = value if isinstance(value, int) else int.from_bytes(bytes.fromhex(value[2:])[:8], "little")
    assert drops >= sent  # per-CPU counters, summed

    # a libbpf program in front: the bcc program is reused from its pin and runs last
    res = run_module(
        "xdp_program",
        dict(name="count", object=paths.bpf_object("xdp_count"), priority=10, interfaces=["vb"], pin_root=pin_root, state_dir=state_dir),
        netns=rx,
    )
    assert res.changed and not res.failed, res
    chain = res["attachments"]["vb"]["chain"]
    assert [e["deployment"] for e in chain] == ["count", "bccguard"] and chain[1]["prog_id"] == prog["id"]
    sent, received = udp_count(tx, rx, "203.0.113.2", 9999)
    assert sent > 0 and received == 0
    # a bcc program cannot be first of a chain (it cannot tail-call)
    res = run_module(
        "xdp_program",
        dict(name="count", object=paths.bpf_object("xdp_count"), priority=90, interfaces=["vb"], pin_root=pin_root, state_dir=state_dir),
        netns=rx,
    )
    assert res.failed and "bccguard" in res["msg"] and "alone or last" in res["msg"], res
