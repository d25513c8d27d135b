"""ebpf.fleet.xdp_support through ansible-playbook against localhost, the whole run inside a namespace."""

import json
import os
import re
import subprocess
import tempfile

import pytest
from harness import paths
from harness.runner import module_env

pytestmark = [pytest.mark.kernel, pytest.mark.playbook]

PLAYBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "playbooks", "xdp_support.yml")


def run_playbook_in_netns(ns, playbook, extra_vars):
    """ansible-playbook (controller and module) in ns: nsenter changes only the network namespace."""
    bindir = os.path.dirname(paths.PYTHON)
    cmd = ["nsenter", "--net=%s" % ns.path, os.path.join(bindir, "ansible-playbook"), playbook, "-i", "localhost,", "-c", "local"]
    cmd += ["-e", json.dumps(extra_vars)]
    env = module_env()
    env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": paths.COLLECTIONS,
            "ANSIBLE_PYTHON_INTERPRETER": paths.PYTHON,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_LOCAL_TEMP": tempfile.gettempdir(),
            "PATH": bindir + os.pathsep + env.get("PATH", ""),
        }
    )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=paths.REPO, check=False)


def test_playbook_reports_veth_native_and_bridge_not(netns):
    ns = netns("xp")
    ns.veth("va", "vb")
    ns.bridge("br0")
    proc = run_playbook_in_netns(ns, PLAYBOOK, {"xdp_interfaces": ["va", "br0"], "native_if": "va", "bridge_if": "br0"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = dict(re.findall(r"XDPLINE (\S+) (native=\S+ mode=\w+)", proc.stdout))
    assert lines == {"va": "native=yes mode=native", "br0": "native=no mode=generic"}, proc.stdout
