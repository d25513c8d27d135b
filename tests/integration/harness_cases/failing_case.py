"""A test that fails on purpose after creating kernel objects; run only by test_harness_cleanup.py.

Collected by pytest only when named explicitly (the file name does not match test_*.py).
"""

import os

import pytest

RECORD = os.environ.get("EBPF_FLEET_HARNESS_RECORD")


@pytest.mark.skipif(not RECORD, reason="run only by test_harness_cleanup.py")
def test_fails_after_creating_namespaces_and_pins(netns, pin_root):
    ns = netns("f")
    ns.veth("va", "vb")
    os.makedirs(os.path.join(pin_root, "deployment"))
    with open(RECORD, "w") as handle:
        handle.write("%s\n%s\n" % (ns.name, pin_root))
    raise AssertionError("failing on purpose")
