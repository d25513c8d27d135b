# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``compiler: bcc``: compile and load a C source with bcc on the host, and hand the loaded program to the chain.

bcc compiles and loads programs itself (``BPF(text=..., cflags=[...])`` then
``load_func(name, BPF.XDP or BPF.SCHED_CLS)``), so a bcc deployment enters the
same flow as a libbpf one through an already loaded program:

* the plan uses a checksum of the source, the cflags, the function and the
  hook (no compile needed to decide, nothing loaded in check mode);
* when the plan needs the program, it is compiled and loaded once; its fd is
  put in the chain's generation like any other instance, then pinned under
  ``<pin_root>/<name>/progs/<hook>@<if>``; the maps bcc created are pinned under
  ``<pin_root>/<name>/maps/`` (the names the kernel holds, at most 15 characters);
* on an upgrade, bcc creates new maps (it cannot be handed the pinned ones):
  the entries of every pinned map whose layout matches the new map's are
  copied into it before the swap, so counters and tables carry over; a map
  whose layout changed starts empty only with ``replace_incompatible_maps``;
* when another deployment changes the chain, the bcc program is reused from
  its pin (it is not compiled again).

Reusing the pinned program and carrying the pinned maps' entries over are in bcc_pins.py.

Limitation: a bcc program cannot use ``fleet/chain.h`` (bcc declares maps its
own way and the loader cannot set ``fleet_chain_slot``), so it can run only
alone on a hook or last in a chain.

bcc exists only for the system Python (Debian ``python3-bpfcc``); the module
respawns itself under it (``ansible.module_utils.common.respawn``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field

from ansible_collections.ebpf.fleet.plugins.module_utils.errors import FleetError
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf
from ansible_collections.ebpf.fleet.plugins.module_utils.maps import map_types
from ansible_collections.ebpf.fleet.plugins.module_utils.programs import clang

SYSTEM_PYTHONS = ["/usr/bin/python3", "/usr/libexec/platform-python", "/usr/bin/python"]
BCC_PACKAGE = "bcc (Debian: python3-bpfcc, for the system Python)"
PROG_TYPE_FOR_HOOK = {"xdp": "XDP", "tc_ingress": "SCHED_CLS", "tc_egress": "SCHED_CLS"}
NO_DATA_MAPS = map_types.NO_DATA


class BccError(FleetError, RuntimeError):
    RESULT_ATTRS = {"verifier_log": "log"}

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log


def has_bcc() -> bool:
    try:
        import bcc  # noqa: F401 pylint: disable=unused-import,import-outside-toplevel
    except ImportError:
        return False
    return True


def cflags(defines: dict, include_dirs: list) -> list:
    """bcc's -I and -D flags (built by module_utils/programs/clang.py, as clang's are); ValueError for a bad define."""
    return clang.bcc_flags(defines, include_dirs)


def digest(src: str, flags: list, function: str, hook: str) -> str:
    """What decides whether a bcc deployment changed: source bytes, cflags, function, program type."""
    sha = hashlib.sha256()
    with open(src, "rb") as handle:
        sha.update(handle.read())
    sha.update(json.dumps({"cflags": flags, "function": function, "type": PROG_TYPE_FOR_HOOK[hook]}, sort_keys=True).encode())
    return sha.hexdigest()


@dataclass
class Loaded:
    """A program bcc (or an earlier run) loaded: its fd, identity and the data maps it uses."""

    prog_fd: int
    prog_id: int
    tag: str
    name: str
    maps: dict = field(default_factory=dict)  # map name -> fd

    @classmethod
    def from_fd(cls, prog_fd: int, with_maps: bool = True) -> Loaded:
        info = libbpf.prog_info(prog_fd)
        loaded = cls(prog_fd=prog_fd, prog_id=info["id"], tag=info["tag"], name=info["name"])
        if with_maps:
            for map_id in info["map_ids"]:
                fd = libbpf.map_fd_by_id(map_id)
                minfo = libbpf.map_info(fd)
                if minfo["type"] in NO_DATA_MAPS or not minfo["name"] or minfo["name"].endswith((".rodata", ".bss", ".data")):
                    os.close(fd)
                    continue
                loaded.maps[minfo["name"]] = fd
        return loaded

    def close(self) -> None:
        for fd in [self.prog_fd] + list(self.maps.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self.maps = {}


def load(src: str, function: str, hook: str, flags: list) -> Loaded:
    """Compile src with bcc and load function for the hook; the caller owns the returned fds."""
    try:
        from bcc import BPF  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise BccError("compiler=bcc: the Python library %s is not importable: %s" % (BCC_PACKAGE, exc))
    try:
        with open(src) as handle:
            text = handle.read()
    except OSError as exc:
        raise BccError("src=%s: cannot read it on the host: %s" % (src, exc))
    with _stderr_captured() as captured:
        try:
            bpf = BPF(text=text, cflags=flags)
        except Exception as exc:  # bcc raises plain Exception; clang's messages went to fd 2
            raise BccError("compiling src=%s with bcc failed: %s\n%s" % (src, exc, _tail(captured())), _tail(captured()))
        try:
            # the expected attach type libbpf gives SEC("xdp") programs: a program array accepts only programs
            # that agree with its owner on it, so the bcc program can sit in a chain of libbpf-loaded ones
            attach_type = libbpf.ATTACH_XDP if hook == "xdp" else -1
            fn = bpf.load_func(function, getattr(BPF, PROG_TYPE_FOR_HOOK[hook]), attach_type=attach_type)
        except Exception as exc:  # a verifier failure or a missing function; the verifier log went to fd 2
            raise BccError(
                "loading function %r of src=%s with bcc failed: %s\nverifier log (end):\n%s" % (function, src, exc, _tail(captured())), _tail(captured())
            )
    return Loaded.from_fd(os.dup(fn.fd))


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def _stderr_captured():
    """bcc's C++ side writes clang's and the verifier's messages to file descriptor 2: keep them for the result."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)

        def read() -> str:
            tmp.seek(0)
            return tmp.read().decode(errors="replace")

        try:
            yield read
        finally:
            os.dup2(saved, 2)
            os.close(saved)
