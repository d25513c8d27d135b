"""The namespace lab of scripts/lab.sh (docs/lab.md) for a test: its own prefix, folder and pin root, so that
labs of two tests never meet; `up` and `down` through the script itself, the way an operator runs it."""

import json
import os
import subprocess

import yaml

from . import bpffs as harness_bpffs
from . import netns as harness_netns
from . import paths
from .runner import run_module

LAB = os.path.join(paths.REPO, "scripts", "lab.sh")


class NetnsLab:
    """scripts/lab.sh under a prefix, pin root and folder of this test; `down` always runs."""

    def __init__(self, tmp_path, edges: int):
        self.prefix = "%s%slab-" % (harness_netns.PREFIX, harness_netns.RUN_ID)
        self.dir = str(tmp_path / "lab")
        self.pin_base = os.path.join(harness_bpffs.TEST_PIN_BASE, harness_netns.unique("lab"))
        self.env = dict(
            os.environ, EBFLAB_PREFIX=self.prefix, EBFLAB_DIR=self.dir, EBFLAB_PIN_ROOT=self.pin_base, EBFLAB_PYTHON=paths.PYTHON, EBFLAB_EDGES=str(edges)
        )
        self.inventory = os.path.join(self.dir, "inventory.ini")

    def sh(self, *args):
        return subprocess.run(["bash", LAB] + list(args), env=self.env, capture_output=True, text=True, timeout=120, check=False)

    def vars_file(self, kind: str, name: str, data: dict):
        """Write <lab>/group_vars/<name>.yml or <lab>/host_vars/<name>.yml (kind: group_vars, host_vars)."""
        os.makedirs(os.path.join(self.dir, kind), exist_ok=True)
        with open(os.path.join(self.dir, kind, name + ".yml"), "w", encoding="utf-8") as handle:
            yaml.safe_dump(data, handle)

    def pin_root(self, host):
        return os.path.join(self.pin_base, host)

    def state_dir(self, host):
        return os.path.join(self.dir, "state", host, "records")

    def info(self, host, **args):
        result = run_module("bpf_info", dict({"pin_root": self.pin_root(host), "state_dir": self.state_dir(host)}, **args), netns=self.prefix + host)
        assert not result.failed, result
        return result

    def xdp(self, host):
        link = json.loads(
            subprocess.run(["ip", "-n", self.prefix + host, "-j", "-d", "link", "show", "lab0"], capture_output=True, text=True, check=True).stdout
        )[0]
        return link.get("xdp")
