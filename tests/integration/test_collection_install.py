"""The Galaxy tarball installs, and its modules run from the installed copy."""

import json
import os
import subprocess

import pytest

from harness import paths
from harness.runner import run_playbook

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

BIN = os.path.dirname(paths.PYTHON)


def galaxy(*args, cwd=None):
    return subprocess.run([os.path.join(BIN, "ansible-galaxy")] + list(args), capture_output=True, text=True,
                          cwd=cwd or paths.REPO, check=False)


def test_built_tarball_installs_and_xdp_support_runs_from_it(tmp_path, netns):
    dist = tmp_path / "dist"
    built = galaxy("collection", "build", "--force", "--output-path", str(dist), paths.REPO)
    assert built.returncode == 0, built.stdout + built.stderr
    tarballs = list(dist.glob("ebpf-fleet-*.tar.gz"))
    assert len(tarballs) == 1
    listing = subprocess.run(["tar", "-tzf", str(tarballs[0])], capture_output=True, text=True, check=True).stdout
    assert "plugins/modules/xdp_support.py" in listing and "bpf/include/fleet/chain.h" in listing
    assert ".venv" not in listing and "build/" not in listing

    installed = tmp_path / "collections"
    result = galaxy("collection", "install", "-p", str(installed), str(tarballs[0]))
    assert result.returncode == 0, result.stdout + result.stderr
    module_path = installed / "ansible_collections" / "ebpf" / "fleet" / "plugins" / "modules" / "xdp_support.py"
    assert module_path.exists()

    host = netns("i")
    host.veth("in0", "in1")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("lab ansible_connection=ebpf.fleet.netns ansible_netns=%s\n" % host.name)
    out = tmp_path / "result.json"
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: lab\n  gather_facts: false\n  tasks:\n"
        "    - ebpf.fleet.xdp_support:\n        interfaces: [in0]\n      register: support\n"
        "    - ansible.builtin.copy:\n        content: '{{ support | to_json }}'\n        dest: %s\n" % out)
    proc = run_playbook(str(playbook), inventory=str(inventory),
                        env={"ANSIBLE_COLLECTIONS_PATH": str(installed)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["interfaces"]["in0"]["native"]["supported"] == "yes"
