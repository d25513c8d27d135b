"""Counter keys by name and by verdict (bpf_inventory.counter_label / verdict_of), as status.yml, bpf_info's
counters and the host metrics show them."""

import pytest

from ansible_collections.ebpf.fleet.plugins.module_utils.host import bpf_inventory


@pytest.mark.parametrize(
    "key, label, verdict",
    [
        ({"reason": "port", "verdict": "drop"}, "port_drop", "drop"),  # filter_stats
        ({"class_id": 3, "outcome": "paced"}, "3_paced", "paced"),  # egress_stats
        ("drop_no_backend", "drop_no_backend", "drop"),  # lb_stats, by enum name
        ("pass_non_vip", "pass_non_vip", "pass"),
        ("tx", "tx", "tx"),
        ("syn", "syn", None),  # how a backend was picked: no verdict
        (7, "7", None),
        ({"reason": "port"}, "port", None),
    ],
)
def test_counter_keys_by_name_and_verdict(key, label, verdict):
    assert bpf_inventory.counter_label(key) == label
    assert bpf_inventory.verdict_of(key) == verdict
