# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What xdp_support reads from one interface, and its native-mode probe.

* driver_facts: ``ethtool -i`` and ``ethtool -l`` (ethtool.py);
* xdp_state / attached_program: the XDP program attached now and its mode (libbpf's query, rtnetlink's as a
  fallback), with the program's name;
* probe_native: attach a program that returns XDP_PASS in native mode and detach it, putting back a program
  that was attached in generic mode; the only function here that changes anything, and it restores what it found
  (or reports that it could not).
"""

from __future__ import annotations

import errno
import os

from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import ethtool, libbpf, xdp_hook
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel.probes import XDP_PASS

PROBE_PROG_NAME = "fleet_xdp_probe"


def attached_program(xdp: dict):
    """{'mode', 'prog_id', 'name'} of the program attached now, or None."""
    if not xdp.get("mode"):
        return None
    prog_id = xdp.get("prog_id") or xdp.get("native_id") or xdp.get("generic_id") or xdp.get("offload_id")
    name = ""
    if prog_id:
        try:
            with libbpf.fd_closing(libbpf.prog_fd_by_id(prog_id)) as fd:
                name = libbpf.prog_info(fd)["name"]
        except (OSError, libbpf.LibbpfMissing):
            name = ""
    return {"mode": xdp["mode"], "prog_id": prog_id, "name": name}


def xdp_state(link: dict) -> dict:
    """The XDP state from libbpf's query (the mode as the kernel reports it), rtnetlink's as a fallback."""
    try:
        return xdp_hook.query(link["ifindex"])
    except OSError:
        return link["xdp"]


def driver_facts(ifname: str) -> dict:
    try:
        info = ethtool.drvinfo(ifname)
    except OSError as exc:
        info = {"driver": "", "version": "", "firmware": "", "bus_info": "", "error": str(exc)}
    try:
        chans = ethtool.channels(ifname)
    except OSError:
        chans = None
    info["channels"] = chans
    return info


def _xdp_link_owns(prog_id: int) -> bool:
    """True when a bpf_link of type xdp holds prog_id (netlink cannot detach such a program)."""
    for link_id in libbpf.link_ids():
        try:
            with libbpf.fd_closing(libbpf.link_fd_by_id(link_id)) as fd:
                info = libbpf.link_info(fd)
        except OSError:
            continue
        if info["type"] == "xdp" and info["prog_id"] == prog_id:
            return True
    return False


def _kernel_message() -> str:
    messages = [line.strip() for line in libbpf.BpfObject.messages() if "Kernel error message" in line]
    return messages[-1].split("Kernel error message:", 1)[-1].strip() if messages else ""


def probe_native(ifindex: int) -> dict:
    """Attach a pass program in native mode and detach it, restoring what was attached before.

    Returns {'status': confirmed|refused|skipped|failed, 'reason'}.
    """
    before = xdp_hook.query(ifindex)
    mode = before["mode"]
    if mode == "native":
        return {"status": "confirmed", "reason": "program %d is attached in native mode now; nothing was changed" % before["native_id"]}
    if mode not in (None, "generic"):
        return {"status": "skipped", "reason": "a program is attached in %s mode; probing would disturb it" % mode}
    prior_id = before["generic_id"] if mode == "generic" else 0
    if prior_id and _xdp_link_owns(prior_id):
        return {"status": "skipped", "reason": "program %d is attached through a bpf_link; it cannot be detached for a probe" % prior_id}
    prior_fd = libbpf.prog_fd_by_id(prior_id) if prior_id else -1
    probe_fd = -1
    libbpf._capture_messages()  # pylint: disable=protected-access
    try:
        probe_fd = libbpf.prog_load_insns(libbpf.PROG_TYPE_XDP, PROBE_PROG_NAME, libbpf.return_insns(XDP_PASS))
        if prior_id:
            xdp_hook.detach(ifindex, libbpf.XDP_FLAGS_SKB_MODE)
        try:
            try:
                xdp_hook.attach(ifindex, probe_fd, libbpf.XDP_FLAGS_DRV_MODE | libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST)
            except OSError as exc:
                detail = _kernel_message() or os.strerror(exc.errno)
                if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
                    result = {"status": "refused", "reason": "the kernel refused a native attach: %s" % detail}
                else:
                    result = {"status": "failed", "reason": "native attach failed: %s (%s)" % (exc, detail)}
            else:
                xdp_hook.detach(ifindex, libbpf.XDP_FLAGS_DRV_MODE)
                result = {"status": "confirmed", "reason": "a pass program attached in native mode and was detached"}
        finally:
            if prior_id:
                xdp_hook.attach(ifindex, prior_fd, libbpf.XDP_FLAGS_SKB_MODE | libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST)
        after = xdp_hook.query(ifindex)
        if after["mode"] != mode or after["prog_id"] != before["prog_id"]:
            result = {
                "status": "failed",
                "reason": "the previous XDP state (%s, program %s) was not restored: now %s, "
                "program %s" % (mode, before["prog_id"], after["mode"], after["prog_id"]),
            }
        elif prior_id:
            result["reason"] += "; program %d was attached again in generic mode" % prior_id
        return result
    finally:
        for fd in (probe_fd, prior_fd):
            if fd >= 0:
                os.close(fd)
