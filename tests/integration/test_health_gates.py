"""ebpf.fleet.health_gates through ansible-playbook, on the controller only: what the rollout play sees.

Two bpf_info-shaped readings (as extra vars, so they reach the filter as Ansible's own tagged values) and the
gates go through tests/integration/playbooks/health_gates.yml; a last run reads this host with the real bpf_info
and a pin root that holds nothing (nothing is loaded, pinned or attached).
"""

import json
import os
import uuid

import pytest
from harness.runner import run_playbook

pytestmark = [pytest.mark.playbook]

PLAYBOOK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "playbooks", "health_gates.yml")

DROP = "deployments.filter.counters.filter_stats.verdicts.drop"
VERDICTS = "deployments.filter.counters.filter_stats.verdicts.*"
BACKENDS = 'deployments.lb.counters.lb_backend_stats.counters | {web1: "0".packets, web2: "1".packets}'
MALFORMED = "sum(deployments.filter.counters.filter_stats.counters.[malformed_drop, malformed_pass][].packets)"

GATES = [
    {"name": "few packets dropped", "query": DROP, "of": VERDICTS, "max": 0.01},
    {"name": "every backend receives traffic", "query": BACKENDS, "each": "backend", "min": 1},
    {"name": "no malformed packets", "query": MALFORMED, "max": 0},
    {"name": "egress is quiet", "query": "deployments.egress.counters.egress_stats.verdicts.drop", "max": 0, "when_missing": "skip"},
]


def reading(passed, dropped, backends, malformed):
    """A registered result of bpf_info with counters: true, on a host with the filter and the load balancer."""
    return {
        "changed": False,
        "failed": False,
        "interfaces": {"eth1": {"ifindex": 3, "xdp": {"mode": "native", "programs": []}}},
        "deployments": {
            "filter": {
                "hook": "xdp",
                "interfaces": ["eth1"],
                "counters": {
                    "filter_stats": {
                        "counters": {
                            "default_pass": {"packets": passed, "bytes": 64 * passed},
                            "port_drop": {"packets": dropped, "bytes": 64 * dropped},
                            "malformed_drop": {"packets": malformed, "bytes": 60 * malformed},
                            "malformed_pass": {"packets": 0, "bytes": 0},
                        },
                        "verdicts": {"pass": passed, "drop": dropped + malformed},
                    }
                },
            },
            "lb": {
                "hook": "xdp",
                "interfaces": ["eth1"],
                "counters": {"lb_backend_stats": {"counters": {str(n): {"packets": p, "bytes": 100 * p} for n, p in enumerate(backends)}, "verdicts": {}}},
            },
        },
    }


def play(tmp_path, **extra_vars):
    out = tmp_path / "results.json"
    proc = run_playbook(PLAYBOOK, extra_vars=dict(extra_vars, gates_out=str(out)))
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and "[WARNING]" not in output and "[DEPRECATION WARNING]" not in output, output
    return proc, output, json.loads(out.read_text()) if out.exists() else None


def test_healthy_counters_pass_every_gate_and_a_missing_deployment_is_skipped(tmp_path):
    proc, output, results = play(tmp_path, deploy_xdp_health_gates=GATES, gates_before=reading(1000, 3, (10, 10), 2), gates_after=reading(2000, 5, (90, 11), 2))
    assert proc.returncode == 0, output
    assert [(item["name"], item["ok"], item["skipped"], item["value"]) for item in results] == [
        ("few packets dropped", True, False, 2 / 1002),
        ("every backend receives traffic", True, False, {"web1": 80, "web2": 1}),
        ("no malformed packets", True, False, 0),
        ("egress is quiet", True, True, None),
    ]
    assert [item["bound"] for item in results] == ["max 0.01", "min 1", "max 0", "max 0"]
    assert results[1]["message"] == ('gate "every backend receives traffic": every backend (2) within min 1 during the window (%s)' % BACKENDS)


def test_unhealthy_counters_fail_the_play_with_one_line_per_failing_gate(tmp_path):
    proc, output, results = play(
        tmp_path, deploy_xdp_health_gates=GATES, gates_before=reading(1000, 3, (10, 10), 2), gates_after=reading(1338, 13, (50, 10), 4)
    )
    assert proc.returncode != 0 and "failed=1" in proc.stdout, output
    assert [item["ok"] for item in results] == [False, False, False, True]
    assert results[0]["value"] == pytest.approx(12 / 350)
    messages = [
        'gate \\"few packets dropped\\": ratio 0.03429 during the window (rose by 12 of 350), above max 0.01 (%s / %s)' % (DROP, VERDICTS),
        'gate \\"every backend receives traffic\\": backend web2 rose by 0, below min 1 (%s)' % BACKENDS.replace('"', '\\"'),
        'gate \\"no malformed packets\\": rose by 2 during the window, above max 0 (%s)' % MALFORMED,
    ]
    assert "HEALTH GATES FAILED: " + "; ".join(messages) in proc.stdout, output


def test_a_bad_gate_fails_the_task_with_a_clear_message_and_no_traceback(tmp_path):
    bad = GATES[:2] + [{"name": "x", "query": DROP, "max": "ten"}]
    proc, output, results = play(tmp_path, deploy_xdp_health_gates=bad, gates_before=reading(0, 0, (0, 0), 0), gates_after=reading(0, 0, (0, 0), 0))
    assert proc.returncode != 0 and results is None, output
    assert 'deploy_xdp_health_gates[2] (\\"x\\").max: \\"ten\\" is not a number' in proc.stdout, output
    proc, output, results = play(
        tmp_path,
        deploy_xdp_health_gates=[{"name": "y", "query": "deployments.[", "max": 1}],
        gates_before=reading(0, 0, (0, 0), 0),
        gates_after=reading(0, 0, (0, 0), 0),
    )
    assert proc.returncode != 0 and results is None, output
    assert (
        'deploy_xdp_health_gates[0] (\\"y\\").query: \\"deployments.[\\" is not a valid JMESPath expression: Incomplete expression at column 13'
    ) in proc.stdout, output


def test_real_bpf_info_readings_of_a_host_without_deployments(tmp_path):
    """bpf_info reads this host for real (a pin root that holds nothing): a gate on a deployment the host lacks
    fails or is skipped as when_missing says, and sum() works on the registered result."""
    pin_root = "/sys/fs/bpf/ebft_gates_%s" % uuid.uuid4().hex[:8]
    gates = [
        {"name": "xdp programs ran", "query": "sum(values(interfaces)[].xdp.programs[].run_cnt)", "min": 0},
        {"name": "filter passes traffic", "query": "deployments.filter.counters.filter_stats.verdicts.pass", "min": 1, "when_missing": "skip"},
        {"name": "lb forwards", "query": "deployments.lb.counters.lb_stats.counters.tx.packets", "min": 1},
    ]
    proc, output, results = play(
        tmp_path, deploy_xdp_health_gates=gates, gates_read_real=True, gates_pin_root=pin_root, gates_state_dir=str(tmp_path / "state")
    )
    assert not os.path.exists(pin_root)
    assert proc.returncode != 0 and "failed=1" in proc.stdout, output
    assert [(item["ok"], item["skipped"], item["value"]) for item in results] == [(True, False, 0), (True, True, None), (False, False, None)]
    assert (
        'HEALTH GATES FAILED: gate \\"lb forwards\\": found nothing after the window; fails (when_missing: fail) '
        "(deployments.lb.counters.lb_stats.counters.tx.packets)"
    ) in proc.stdout, output
