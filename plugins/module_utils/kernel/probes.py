# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel and BPF facts, each probed on the running kernel rather than guessed from its version.

Every answer is 'yes', 'no' or 'unknown' with a reason. Probes never change
the state of the host: the bpf_link probes (XDP and TCX links) run in a
forked child that first moves into a brand-new, private network namespace,
attaches to that namespace's own loopback and exits, which destroys the
namespace and everything attached in it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf

YES, NO, UNKNOWN = "yes", "no", "unknown"
JIT_SYSCTL = "/proc/sys/net/core/bpf_jit_enable"
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
CLONE_NEWNET = 0x40000000
PROG_TYPE_SOCKET_FILTER = 1
XDP_PASS = 2
TCX_NEXT = -1
LOOPBACK_IFINDEX = 1  # in a new network namespace, lo is always ifindex 1

PROG_TYPES = (("xdp", libbpf.PROG_TYPE_XDP), ("sched_cls", libbpf.PROG_TYPE_SCHED_CLS), ("ext", libbpf.PROG_TYPE_EXT))


def answer(value: str, reason: str) -> dict:
    return {"supported": value, "reason": reason}


def parse_release(release: str) -> tuple:
    """'6.1.0-18-amd64' -> (6, 1, 0); '5.15' -> (5, 15, 0); unparseable -> ()."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", release or "")
    if not match:
        return ()
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def version_at_least(release, wanted: str) -> bool:
    have = parse_release(release) if isinstance(release, str) else tuple(release)
    want = parse_release(wanted)
    return bool(have) and have[:2] >= want[:2]


def parse_jit(text) -> dict:
    """The bpf_jit_enable sysctl: 0 off, 1 on, 2 on with debug output; None when the file is missing."""
    if text is None:
        return answer(UNKNOWN, "%s is missing (kernel built without the BPF JIT, or /proc not mounted)" % JIT_SYSCTL)
    value = text.strip()
    if value in ("1", "2"):
        return answer(YES, "%s = %s" % (JIT_SYSCTL, value))
    if value == "0":
        return answer(NO, "%s = 0 (programs run in the interpreter)" % JIT_SYSCTL)
    return answer(UNKNOWN, "%s holds %r" % (JIT_SYSCTL, value))


def jit_probe() -> dict:
    """Load a trivial program and look whether the kernel JIT-compiled it (works in any network namespace,
    where the bpf_jit_enable sysctl, which only the initial namespace has, is missing)."""
    try:
        fd = libbpf.prog_load_insns(PROG_TYPE_SOCKET_FILTER, "fleet_jit_probe", libbpf.return_insns(0))
    except (OSError, libbpf.LibbpfMissing) as exc:
        return answer(UNKNOWN, "a probe program did not load: %s" % exc)
    with libbpf.fd_closing(fd):
        info = libbpf.prog_info(fd)
    if info["jited_prog_len"] > 0:
        return answer(YES, "a probe program was JIT-compiled (%d bytes of machine code)" % info["jited_prog_len"])
    return answer(NO, "a probe program was not JIT-compiled (it runs in the interpreter)")


def jit_fact() -> dict:
    """The sysctl when this network namespace has it (the initial one), else the load probe."""
    sysctl = _read(JIT_SYSCTL)
    if sysctl is not None:
        return parse_jit(sysctl)
    return jit_probe()


def _read(path: str):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def bpf_syscall() -> dict:
    """Is there a bpf() syscall? A harmless BPF_PROG_GET_NEXT_ID tells: ENOSYS means no."""
    if not libbpf.available():
        return answer(UNKNOWN, "libbpf (Debian package %s) is not installed" % libbpf.LIBBPF_PACKAGE)
    nxt = ctypes.c_uint32(0)
    ret = libbpf.lib().bpf_prog_get_next_id(0, ctypes.byref(nxt))
    if ret == -errno.ENOSYS:
        return answer(NO, "bpf() returns ENOSYS: the kernel is built without CONFIG_BPF_SYSCALL")
    if ret == -errno.EPERM:
        return answer(YES, "bpf() exists but refused the caller (EPERM): run as root")
    return answer(YES, "bpf(BPF_PROG_GET_NEXT_ID) answered")


def prog_types() -> dict:
    """libbpf's probe per program type the loaders need: {'xdp': answer, 'sched_cls': ..., 'ext': ...}."""
    result = {}
    for name, num in PROG_TYPES:
        if not libbpf.available():
            result[name] = answer(UNKNOWN, "libbpf is not installed")
            continue
        try:
            ok = libbpf.probe_prog_type(num)
        except OSError as exc:
            result[name] = answer(UNKNOWN, "probe failed: %s" % exc)
            continue
        result[name] = answer(YES, "a %s program loaded" % name) if ok else answer(NO, "the kernel refused to load a %s program" % name)
    return result


def _link_probe_in_child() -> dict:
    """Runs in the forked child: private netns, then an XDP link and a TCX link on its loopback."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        return {"error": "unshare(CLONE_NEWNET) failed: %s" % os.strerror(err)}
    out = {}
    for key, prog_type, ret, attach in (
        ("xdp", libbpf.PROG_TYPE_XDP, XDP_PASS, libbpf.ATTACH_XDP),
        ("tcx", libbpf.PROG_TYPE_SCHED_CLS, TCX_NEXT, libbpf.ATTACH_TCX_INGRESS),
    ):
        try:
            prog_fd = libbpf.prog_load_insns(prog_type, "fleet_probe", libbpf.return_insns(ret))
        except OSError as exc:
            out[key] = {"stage": "load", "errno": exc.errno}
            continue
        try:
            link_fd = libbpf.link_create(prog_fd, LOOPBACK_IFINDEX, attach)
            os.close(link_fd)
            out[key] = {"stage": "link", "errno": 0}
        except OSError as exc:
            out[key] = {"stage": "link", "errno": exc.errno}
        finally:
            os.close(prog_fd)
    return out


def interpret_link_probe(what: str, result) -> dict:
    """Turn the child's {'stage', 'errno'} into an answer."""
    label = {"xdp": "bpf_link for XDP (BPF_LINK_CREATE, attach type xdp)", "tcx": "TCX (BPF_LINK_CREATE, attach type tcx_ingress)"}[what]
    if not result:
        return answer(UNKNOWN, "%s: the probe did not run" % label)
    if "error" in result:
        return answer(UNKNOWN, "%s: %s" % (label, result["error"]))
    res = result.get(what)
    if res is None:
        return answer(UNKNOWN, "%s: no result" % label)
    err = res.get("errno", 0)
    if res.get("stage") == "load":
        return answer(UNKNOWN if err == errno.EPERM else NO, "%s: the trivial program did not load (%s)" % (label, os.strerror(err)))
    if err == 0:
        return answer(YES, "%s: a link was created on the loopback of a private network namespace" % label)
    if err in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return answer(NO, "%s: the kernel rejected the attach type (%s)" % (label, os.strerror(err)))
    return answer(UNKNOWN, "%s: BPF_LINK_CREATE failed with %s" % (label, os.strerror(err)))


def link_probes() -> dict:
    """{'xdp_link': answer, 'tcx': answer}, probed in a throw-away network namespace."""
    if not libbpf.available():
        reason = "libbpf (Debian package %s) is not installed" % libbpf.LIBBPF_PACKAGE
        return {"xdp_link": answer(UNKNOWN, reason), "tcx": answer(UNKNOWN, reason)}
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(read_fd)
            data = json.dumps(_link_probe_in_child()).encode()
            os.write(write_fd, data)
        except BaseException:  # pylint: disable=broad-except
            code = 1
        finally:
            os._exit(code)  # pylint: disable=protected-access
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    try:
        result = json.loads(b"".join(chunks).decode() or "{}")
    except ValueError:
        result = {}
    return {"xdp_link": interpret_link_probe("xdp", result), "tcx": interpret_link_probe("tcx", result)}


def bpffs_fact() -> dict:
    points = bpffs.bpffs_mount_points()
    if points:
        return dict(answer(YES, "bpf filesystem mounted at %s" % ", ".join(points)), mount_points=points)
    return dict(answer(NO, "no bpf filesystem is mounted (the collection's modules mount /sys/fs/bpf when they pin)"), mount_points=[])


def facts() -> dict:
    """Everything about the kernel the module reports under `kernel`."""
    release = os.uname().release
    syscall = bpf_syscall()
    if syscall["supported"] == YES:
        types = prog_types()
        links = link_probes()
    else:
        skipped = answer(UNKNOWN, "not probed: the bpf() syscall is not usable")
        if syscall["supported"] == NO:
            skipped = answer(NO, "no bpf() syscall")
        types = {name: dict(skipped) for name, _num in PROG_TYPES}
        links = {"xdp_link": dict(skipped), "tcx": dict(skipped)}
    btf = os.path.exists(VMLINUX_BTF)
    return {
        "release": release,
        "version": ".".join(str(part) for part in parse_release(release)),
        "bpf_syscall": syscall,
        "jit_enabled": jit_fact() if syscall["supported"] == YES else parse_jit(_read(JIT_SYSCTL)),
        "vmlinux_btf": answer(YES, "%s exists" % VMLINUX_BTF)
        if btf
        else answer(NO, "%s is missing (kernel built without CONFIG_DEBUG_INFO_BTF)" % VMLINUX_BTF),
        "bpffs": bpffs_fact(),
        "xdp_link": links["xdp_link"],
        "tcx": links["tcx"],
        "prog_types": types,
    }
