"""The systemd units and the wrapper a role installs for ebpf-fleet-host (extras/host): ordering, targets and
commands as docs/restore.md describes them (these machines have no systemd: test_restore.py runs each unit's
ExecStart)."""

import configparser
import os
import re

from harness import paths

HOST = os.path.join(paths.REPO, "extras", "host")


def unit(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str
    parser.read(os.path.join(HOST, "systemd", name), encoding="utf-8")
    return parser


def test_restore_unit_is_a_oneshot_after_bpffs_before_network_online_wanted_by_multi_user():
    svc = unit("ebpf-fleet-restore.service")
    assert "sys-fs-bpf.mount" in svc["Unit"]["After"].split()
    assert svc["Unit"]["Before"].split() == ["network-online.target"]
    assert svc["Service"]["Type"] == "oneshot" and svc["Service"]["RemainAfterExit"] == "yes"
    assert svc["Service"]["ExecStart"] == "/usr/local/sbin/ebpf-fleet-host restore"
    assert svc["Install"]["WantedBy"] == "multi-user.target"


def test_metrics_service_runs_from_its_timer_and_writes_the_textfile_folder():
    svc, timer = unit("ebpf-fleet-metrics.service"), unit("ebpf-fleet-metrics.timer")
    assert svc["Service"]["ExecStart"] == "/usr/local/sbin/ebpf-fleet-host metrics"
    assert "EBPF_FLEET_TEXTFILE_DIR=" in svc["Service"]["Environment"]
    assert "Install" not in svc  # started by the timer only
    assert timer["Timer"]["OnUnitActiveSec"] and timer["Install"]["WantedBy"] == "timers.target"


def test_the_wrapper_runs_the_collections_module_that_exists():
    with open(os.path.join(HOST, "ebpf-fleet-host"), encoding="utf-8") as handle:
        text = handle.read()
    assert text.startswith("#!/bin/sh\n") and os.access(os.path.join(HOST, "ebpf-fleet-host"), os.X_OK)
    module = re.search(r"-m (ansible_collections\.ebpf\.fleet\.\S+)", text).group(1)
    assert os.path.isfile(os.path.join(paths.REPO, *module.split(".")[3:]) + ".py")
