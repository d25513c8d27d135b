"""A unique pin root on bpffs per test, removed afterwards."""

import os
import shutil
import subprocess

from .netns import PREFIX, RUN_ID, unique

BPFFS = "/sys/fs/bpf"
TEST_PIN_BASE = os.path.join(BPFFS, "%s_%s" % (PREFIX, RUN_ID))


def ensure_bpffs():
    with open("/proc/self/mounts") as handle:
        if any(line.split()[1] == BPFFS and line.split()[2] == "bpf" for line in handle):
            return
    subprocess.run(["mount", "-t", "bpf", "bpf", BPFFS], check=True)


def new_pin_root() -> str:
    ensure_bpffs()
    path = os.path.join(TEST_PIN_BASE, unique("p"))
    os.makedirs(path, mode=0o700)
    return path


def remove_pin_root(path: str):
    shutil.rmtree(path, ignore_errors=True)


def remove_all():
    shutil.rmtree(TEST_PIN_BASE, ignore_errors=True)
