# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pack the collection's module_utils into one zip for the host command; bpf_host runs it on the controller.

    python lib_bundle.py SRC_DIR DEST_ZIP

The zip holds every SRC_DIR/**/*.py (the top-level files and the subpackages kernel/, programs/, maps/, dataplane/,
host/ with their __init__.py) as ansible_collections/ebpf/fleet/plugins/module_utils/**/*.py, with directory entries,
so Python imports them straight from the zip on PYTHONPATH. Names are sorted and every
entry has the same timestamp and mode, so the same sources always give the same bytes: the copy to the hosts
is then idempotent by checksum, however often the collection is reinstalled. DEST_ZIP is replaced atomically.
"""

from __future__ import annotations

import os
import sys
import zipfile

PACKAGE = "ansible_collections/ebpf/fleet/plugins/module_utils"
STAMP = (1980, 1, 1, 0, 0, 0)


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=STAMP)
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def bundle(src: str, dest: str) -> int:
    """Write the zip; returns the number of modules in it."""
    names = sorted(
        os.path.relpath(os.path.join(top, name), src).replace(os.sep, "/")
        for top, dirs, files in os.walk(src)
        if "__pycache__" not in top.split(os.sep)
        for name in files
        if name.endswith(".py")
    )
    if not names:
        raise SystemExit("lib_bundle: no *.py in %s (expected the collection's plugins/module_utils)" % src)
    tmp = "%s.%d.tmp" % (dest, os.getpid())
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            parts = PACKAGE.split("/")
            folders = ["/".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
            folders += sorted({"%s/%s" % (PACKAGE, name.rsplit("/", 1)[0]) for name in names if "/" in name})
            for folder in folders:
                archive.writestr(_entry(folder + "/", 0o40755), b"")
            for name in names:
                with open(os.path.join(src, name), "rb") as source:
                    archive.writestr(_entry("%s/%s" % (PACKAGE, name), 0o100644), source.read())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(names)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[2])), exist_ok=True)
    print("%d modules in %s" % (bundle(sys.argv[1], sys.argv[2]), sys.argv[2]))
