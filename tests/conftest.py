"""Fixtures shared by every test: namespaces, pin roots, a state directory and the module runner.

Everything a test creates in the kernel carries this run's unique prefix and
is removed when the test ends, pass or fail.
"""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import bpffs as harness_bpffs  # noqa: E402
from harness import netns as harness_netns  # noqa: E402
from harness import paths  # noqa: E402
from harness.runner import run_module as _run_module  # noqa: E402

# Make `ansible_collections.ebpf.fleet` importable in-process (unit tests).
if paths.COLLECTIONS not in sys.path:
    sys.path.insert(0, paths.COLLECTIONS)


def pytest_configure(config):
    config.addinivalue_line("markers", "kernel: needs root and the real kernel (namespaces, BPF)")
    config.addinivalue_line("markers", "playbook: runs ansible-playbook")


@pytest.fixture
def netns():
    """Factory: netns('tag') -> a new namespace; all removed after the test."""
    factory = harness_netns.NetnsFactory()
    try:
        yield factory
    finally:
        errors = factory.delete_all()
        assert not errors, "namespaces left behind: %s" % errors


@pytest.fixture
def pin_root():
    """A fresh, unique folder on bpffs for this test's pins."""
    path = harness_bpffs.new_pin_root()
    try:
        yield path
    finally:
        harness_bpffs.remove_pin_root(path)


@pytest.fixture
def state_dir(tmp_path):
    """Where modules record deployments on the (test) host."""
    path = tmp_path / "state"
    path.mkdir()
    return str(path)


@pytest.fixture
def run_module():
    """run_module('xdp_support', {...}, netns=ns, check_mode=False, diff=False) -> result dict."""
    return _run_module


IPROUTE2_DIRS_BEFORE = harness_bpffs.iproute2_dirs_present()


def pytest_sessionfinish(session, exitstatus):
    harness_bpffs.remove_all()
    if not IPROUTE2_DIRS_BEFORE:
        harness_bpffs.remove_empty_iproute2_dirs()
    for name in harness_netns.leftover_namespaces():
        subprocess.run(["ip", "netns", "del", name], check=False)
