"""docs/operations.md, *Recovering a locked-out host by hand*: the console commands it gives do what it says.

A program the collection attached through a pinned bpf_link cannot be taken off with `ip link set dev X xdp off`
(the kernel refuses: "Can't replace active BPF XDP link"); `bpftool link detach pinned <pin>` takes it off (TCX
the same way, clsact with `tc filter del ... pref 61934`); the records still describe it, so bpf_info reports it
drifted and the host command `ebpf-fleet-host restore` attaches it again.
"""

import json
import os
from types import SimpleNamespace

import pytest
from harness import paths
from harness.traffic import udp_count

pytestmark = pytest.mark.kernel

PORT = 9999  # the drop fixtures drop UDP to this port (tests/bpf/drop_udp.h)
WRAPPER = os.path.join(paths.REPO, "extras", "host", "ebpf-fleet-host")


@pytest.fixture
def lab(netns, pin_root, state_dir):
    """tx (203.0.113.1, va) -- veth -- rx (203.0.113.2, vb): the deployments go on rx's vb."""
    tx, rx = netns("rtx"), netns("rrx")
    tx.veth("va", "vb", peer_ns=rx, addr_a="203.0.113.1/24", addr_b="203.0.113.2/24")
    return SimpleNamespace(tx=tx, rx=rx, pin_root=pin_root, state_dir=state_dir, base=dict(pin_root=pin_root, state_dir=state_dir, interfaces=["vb"]))


def udp_received(lab) -> bool:
    sent, received = udp_count(lab.tx, lab.rx, "203.0.113.2", PORT, duration=0.3)
    assert sent > 0
    return received > 0


def xdp_prog_id(lab) -> int:
    link = json.loads(lab.rx.ip("-j", "-d", "link", "show", "vb").stdout)[0]
    return link.get("xdp", {}).get("prog", {}).get("id", 0)


def drift_state(lab, run_module, name: str) -> str:
    res = run_module("bpf_info", dict(pin_root=lab.pin_root, state_dir=lab.state_dir, check_records=True), netns=lab.rx)
    assert not res.failed, res.get("msg")
    return res["deployments"][name]["drift"]["state"]


def test_ip_link_cannot_detach_the_pinned_xdp_link_bpftool_can_and_the_host_command_restores_it(lab, run_module):
    res = run_module("xdp_program", dict(lab.base, name="guard", object=paths.bpf_object("xdp_drop_udp")), netns=lab.rx)
    assert res.changed and not res.failed, res
    assert not udp_received(lab)

    refused = lab.rx.run(["ip", "link", "set", "dev", "vb", "xdp", "off"], check=False)
    assert refused.returncode != 0 and "Can't replace active BPF XDP link" in refused.stderr, refused
    assert xdp_prog_id(lab) and not udp_received(lab)

    link_pin = os.path.join(lab.pin_root, "_hooks", "xdp@vb", "link")
    lab.rx.run(["bpftool", "link", "detach", "pinned", link_pin])
    assert xdp_prog_id(lab) == 0 and udp_received(lab)
    assert drift_state(lab, run_module, "guard") == "drifted"

    env = dict(os.environ, EBPF_FLEET_LIB=paths.COLLECTIONS, EBPF_FLEET_PYTHON=paths.PYTHON, EBPF_FLEET_STATE_DIR=lab.state_dir)
    restored = lab.rx.run([WRAPPER, "restore"], check=False, env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert restored.stdout.startswith("guard: restored"), restored.stdout
    assert xdp_prog_id(lab) and not udp_received(lab)
    assert drift_state(lab, run_module, "guard") == "in_sync"


@pytest.mark.parametrize("attach", ["tcx", "clsact"])
def test_a_tc_program_is_taken_off_by_its_link_pin_or_its_clsact_preference(lab, run_module, attach):
    res = run_module("tc_program", dict(lab.base, name="tcguard", object=paths.bpf_object("tc_drop_udp"), direction="ingress", attach=attach), netns=lab.rx)
    assert res.changed and not res.failed, res
    assert not udp_received(lab)
    if attach == "tcx":
        lab.rx.run(["bpftool", "link", "detach", "pinned", os.path.join(lab.pin_root, "_hooks", "tc_ingress@vb", "link")])
    else:
        lab.rx.run(["tc", "filter", "del", "dev", "vb", "ingress", "pref", "61934"])
    assert udp_received(lab)
    assert drift_state(lab, run_module, "tcguard") == "drifted"
