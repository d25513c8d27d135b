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


# iproute2 (`ip link set ... obj`, `tc filter ... bpf obj`) and libxdp (xdp-loader) create their own
# folders on bpffs (tc/globals, with ip and xdp as links to tc; or xdp as a folder). Tests that use them
# leave them behind; the session removes them again when they did not exist before it and hold no pins.
IPROUTE2_DIRS = [os.path.join(BPFFS, name) for name in ("ip", "xdp", "tc")]


def iproute2_dirs_present() -> bool:
    return any(os.path.lexists(path) for path in IPROUTE2_DIRS)


def _holds_pins(path: str) -> bool:
    return any(files for _root, _dirs, files in os.walk(path))


def remove_empty_iproute2_dirs():
    real_dirs = [path for path in IPROUTE2_DIRS if os.path.isdir(path) and not os.path.islink(path)]
    if any(_holds_pins(path) for path in real_dirs):
        return  # something is pinned there: not ours to remove
    for path in IPROUTE2_DIRS:
        if os.path.islink(path):
            os.unlink(path)
    for path in real_dirs:
        shutil.rmtree(path, ignore_errors=True)
