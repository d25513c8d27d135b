"""Pin layout and name validation (no kernel needed)."""

import pytest

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs


@pytest.mark.parametrize("name", ["filter", "lb-1", "edge_v2", "A_b"])
def test_valid_deployment_names_are_accepted(name):
    assert bpffs.check_name("name", name) == name


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "-lead", "x" * 65, "sp ace", "edge.v2", None])
def test_invalid_deployment_names_fail_naming_field_and_value(name):
    with pytest.raises(ValueError) as err:
        bpffs.check_name("name", name)
    assert "name=" in str(err.value) and "expected" in str(err.value)


def test_pin_layout_keeps_each_deployment_in_its_own_folder():
    assert bpffs.map_pin("/sys/fs/bpf/x", "filter", "deny_v4") == "/sys/fs/bpf/x/filter/maps/deny_v4"
    assert bpffs.prog_pin("/sys/fs/bpf/x", "filter", "xdp", "eth0") == "/sys/fs/bpf/x/filter/progs/xdp@eth0"
    assert bpffs.hook_dir("/sys/fs/bpf/x", "tc_egress", "eth1") == "/sys/fs/bpf/x/_hooks/tc_egress@eth1"
