"""The harness removes what a test created even when the test fails."""

import os
import subprocess
import sys

from harness import paths


def test_failed_test_leaves_no_namespace_and_no_pin_root(tmp_path):
    record = tmp_path / "created.txt"
    env = dict(os.environ, EBPF_FLEET_HARNESS_RECORD=str(record))
    case = os.path.join(paths.REPO, "tests", "integration", "harness_cases", "failing_case.py")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", os.path.join(paths.REPO, "tests"), case],
        capture_output=True,
        text=True,
        env=env,
        cwd=paths.REPO,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "failing on purpose" in proc.stdout
    netns_name, pin_root = record.read_text().split()
    assert not os.path.exists("/run/netns/%s" % netns_name)
    assert not os.path.exists(pin_root)
