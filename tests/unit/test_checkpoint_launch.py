"""How checkpoint.py starts, watches and stops its watchdog under systemd.

Mocked: systemd cannot run on this machine (PID 1 is not systemd), so these tests replace `systemd-run` and
`systemctl` by recording fakes and check the command lines. The detached-process launcher runs for real in
tests/integration/test_checkpoint.py and test_rollouts.py; the systemd one runs for real in the VM scenarios.
"""

import os
import subprocess
import sys
import zipfile

import pytest
from harness import paths

from ansible_collections.ebpf.fleet.plugins.module_utils.host import checkpoint


class Recorder:
    """subprocess.run stand-in: records argv, answers with a return code per program."""

    def __init__(self, codes=None):
        self.calls = []
        self.codes = codes or {}

    def __call__(self, argv, **_kwargs):
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(argv, self.codes.get(argv[0], 0), "", "")


@pytest.fixture
def systemd(monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(checkpoint, "_has_systemd", lambda: True)
    monkeypatch.setattr(checkpoint.subprocess, "run", recorder)
    return recorder


def test_the_watchdog_is_a_transient_unit_named_by_the_token(systemd, tmp_path):
    started = checkpoint._launch(str(tmp_path), "0123abcd", "/var/lib/ebpf_fleet/.checkpoint/lib.zip")
    assert started == {"launcher": "systemd", "unit": "ebpf-fleet-checkpoint-0123abcd"}
    assert systemd.calls == [
        [
            "systemd-run",
            "--unit",
            "ebpf-fleet-checkpoint-0123abcd",
            "--collect",
            "--quiet",
            "--service-type=exec",
            "--",
            sys.executable,
            "-I",
            "-c",
            checkpoint._WATCHDOG_BOOT,
            "/var/lib/ebpf_fleet/.checkpoint/lib.zip",
            "ansible_collections.ebpf.fleet.plugins.module_utils.host.checkpoint",
            "watch",
            "--state-dir",
            str(tmp_path),
            "--token",
            "0123abcd",
        ]
    ]


def test_a_unit_that_does_not_start_fails_the_arm_with_systemd_run_s_words(monkeypatch, tmp_path):
    def refuse(argv, **_kwargs):
        return subprocess.CompletedProcess(argv, 1, "", "Failed to start transient service unit: Access denied\n")

    monkeypatch.setattr(checkpoint, "_has_systemd", lambda: True)
    monkeypatch.setattr(checkpoint.subprocess, "run", refuse)
    with pytest.raises(
        checkpoint.CheckpointError,
        match="systemd-run could not start the revert watchdog ebpf-fleet-checkpoint-x1: Failed to start transient service unit: Access denied",
    ):
        checkpoint._launch(str(tmp_path), "x1", "/lib.zip")


def test_a_unit_is_alive_while_systemctl_says_active_and_is_stopped_when_it_lingers(systemd, monkeypatch):
    pending = {"launcher": "systemd", "unit": "ebpf-fleet-checkpoint-t1", "token": "t1"}
    assert checkpoint.watchdog_alive(pending)
    assert systemd.calls[-1] == ["systemctl", "is-active", "--quiet", "ebpf-fleet-checkpoint-t1"]
    monkeypatch.setattr(checkpoint, "STOP_WAIT", 0.2)
    checkpoint._stop_watchdog(pending)  # still "active" after the wait: stopped
    assert systemd.calls[-1] == ["systemctl", "stop", "ebpf-fleet-checkpoint-t1"]
    systemd.codes["systemctl"] = 3  # inactive
    assert not checkpoint.watchdog_alive(pending)


def test_the_watchdog_runs_from_its_library_zip_without_running_a_sitecustomize_in_it(monkeypatch, tmp_path):
    # for real (no systemd: the detached-process launcher): the library is a zip like the one an arm copies from
    # a module's AnsiballZ payload, which holds a sitecustomize.py of ansible-core's; on PYTHONPATH, Python would
    # import it at startup
    lib = tmp_path / "lib.zip"
    bundle = os.path.join(paths.REPO, "roles", "bpf_host", "files", "lib_bundle.py")
    subprocess.run([sys.executable, bundle, os.path.join(paths.REPO, "plugins", "module_utils"), str(lib)], check=True)
    marker = tmp_path / "sitecustomize-ran"
    with zipfile.ZipFile(lib, "a") as payload:
        payload.writestr("sitecustomize.py", "open(%r, 'w').close()\n" % str(marker))
    state_dir = tmp_path / "state"
    os.makedirs(checkpoint.folder(str(state_dir)))
    monkeypatch.setattr(checkpoint, "_has_systemd", lambda: False)
    monkeypatch.setenv("PYTHONPATH", str(lib))  # the arming module's own environment must not leak either
    started = checkpoint._launch(str(state_dir), "t0ken", str(lib))
    os.waitpid(started["pid"], 0)  # nothing is armed: the watchdog notes its start and exits
    with open(os.path.join(checkpoint.folder(str(state_dir)), checkpoint.STARTED), encoding="utf-8") as handle:
        assert handle.read() == "t0ken"
    assert not marker.exists()
