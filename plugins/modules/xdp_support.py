#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: xdp_support
short_description: Report whether a host and its interfaces can run XDP, and in which mode
version_added: "0.1.0"
description:
  - Reports the kernel's BPF facts (release, bpf() syscall, JIT, vmlinux BTF, bpffs, bpf_link for XDP, TCX,
    the program types loaders need), probing each on the running kernel rather than inferring it from the version.
  - For every requested interface reports the driver (what C(ethtool -i) shows), the kernel's own XDP feature
    flags (netdev generic netlink C(xdp-features), Linux 6.3 and later), whether native, generic and offload
    XDP are supported (each C(yes), C(no) or C(unknown) with the reason), the largest MTU native XDP allows
    where known, queue and channel counts, the XDP program attached now, a recommended mode and a verdict.
  - The kernel's flags win; on older kernels a driver knowledge table (which drivers gained native XDP in which
    release, their quirks) answers; a missing answer is C(unknown), never C(no).
  - Read-only, except with O(probe=true), which briefly attaches a trivial pass program and restores the
    previous state exactly.
  - Runs in the network namespace of the module process, so a lab host entered with
    C(nsenter --net=/run/netns/NAME) reports its own interfaces.
author:
  - ebpf.fleet developers (@ebpf-fleet)
extends_documentation_fragment:
  - ebpf.fleet.attributes
  - ebpf.fleet.attributes.platform
  - ebpf.fleet.paths
attributes:
  check_mode:
    support: full
    details: The module only reads, so check mode reports the same facts; O(probe) is skipped and reported as skipped.
  diff_mode:
    support: none
options:
  interfaces:
    description:
      - Interface names to report on.
      - When empty, every interface of the network namespace except loopback devices.
      - A name that does not exist fails the module before anything is probed, naming the interfaces that do exist.
    type: list
    elements: str
    default: []
  require:
    description:
      - Fail unless every reported interface supports XDP in this mode; the message names each interface and
        what is missing. The facts are returned either way.
      - V(none) never fails; V(any) needs native, generic or offload to be C(yes); V(generic) needs generic;
        V(native) needs native.
      - C(unknown) does not satisfy a requirement.
    type: str
    choices: [none, any, generic, native]
    default: none
  probe:
    description:
      - Confirm native XDP by attaching a trivial program that returns C(XDP_PASS) in native mode, then detaching it.
      - An interface with a program attached in native mode is confirmed without any change. A program attached
        in generic mode is detached for the probe and attached again afterwards, the same program (same id) in the
        same mode; an interface whose XDP hook is held by a bpf_link, or in offload mode, is skipped.
      - While the probe runs (milliseconds), traffic on the interface passes without the previous program.
      - Skipped in check mode, and reported as skipped.
    type: bool
    default: false
requirements:
  - pyroute2 (Debian package python3-pyroute2)
  - libbpf 1.x (Debian package libbpf1)
notes:
  - Needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN for the link probes).
  - The bpf_link and TCX probes run in a forked child inside a new, private network namespace that disappears with
    it, so they change nothing on the host.
  - Driver table versions are mainline releases; a vendor kernel with backported drivers may show C(no) where the
    driver works. Use O(probe=true) to settle it.
seealso:
  - name: Kernel documentation of the netdev netlink family
    description: The xdp-features flags reported per interface.
    link: https://docs.kernel.org/networking/netlink_spec/netdev.html
"""

EXAMPLES = r"""
- name: Report XDP support of every interface
  ebpf.fleet.xdp_support:
  register: xdp

- name: Show the verdict per interface
  ansible.builtin.debug:
    msg: "{{ xdp.interfaces | dict2items | map(attribute='value.verdict') | list }}"

- name: Refuse to continue unless eth1 and eth2 can run XDP in the driver
  ebpf.fleet.xdp_support:
    interfaces: [eth1, eth2]
    require: native

- name: Confirm native XDP by attaching a pass program for a moment
  ebpf.fleet.xdp_support:
    interfaces: [eth1]
    probe: true
  register: probed
"""

RETURN = r"""
kernel:
  description: Kernel and BPF facts. Every fact is a dict with C(supported) (yes, no or unknown) and C(reason).
  returned: always
  type: dict
  contains:
    release:
      description: The running kernel release (C(uname -r)).
      type: str
      sample: 6.1.0-18-amd64
    version:
      description: The numeric part of the release.
      type: str
      sample: 6.1.0
    bpf_syscall:
      description: Whether the bpf() syscall exists.
      type: dict
      sample: {supported: "yes", reason: "bpf(BPF_PROG_GET_NEXT_ID) answered"}
    jit_enabled:
      description: Whether the BPF JIT is on (C(/proc/sys/net/core/bpf_jit_enable)).
      type: dict
      sample: {supported: "yes", reason: "/proc/sys/net/core/bpf_jit_enable = 1"}
    vmlinux_btf:
      description: Whether the kernel exposes its BTF (C(/sys/kernel/btf/vmlinux)), which CO-RE programs need.
      type: dict
      sample: {supported: "yes", reason: "/sys/kernel/btf/vmlinux exists"}
    bpffs:
      description: Whether a bpf filesystem is mounted, and where (C(mount_points)).
      type: dict
      sample: {supported: "yes", reason: "bpf filesystem mounted at /sys/fs/bpf", mount_points: ["/sys/fs/bpf"]}
    xdp_link:
      description: Whether XDP programs can be attached through a bpf_link (probed).
      type: dict
      sample: {supported: "yes", reason: "a link was created on the loopback of a private network namespace"}
    tcx:
      description: Whether TCX links (tc ingress/egress through bpf_link, Linux 6.6+) work (probed).
      type: dict
      sample: {supported: "no", reason: "the kernel rejected the attach type (Invalid argument)"}
    prog_types:
      description: Per program type the loaders need (C(xdp), C(sched_cls), C(ext)), whether the kernel loads it.
      type: dict
      sample: {xdp: {supported: "yes", reason: "a xdp program loaded"}, ext: {supported: "no", reason: "..."}}
xdp_features_available:
  description: Whether the kernel answered the netdev generic netlink family (Linux 6.3+); when not, the driver table decides.
  returned: always
  type: bool
  sample: true
interfaces:
  description: One entry per reported interface, keyed by its name.
  returned: always
  type: dict
  contains:
    ifindex:
      description: Interface index.
      type: int
      sample: 3
    kind:
      description: The rtnetlink link kind (veth, bridge, macvlan, ...), or null for physical devices.
      type: str
      sample: veth
    mtu:
      description: The current MTU.
      type: int
      sample: 1500
    driver:
      description: The driver (C(ethtool -i)), or an empty string when the device reports none.
      type: str
      sample: mlx5_core
    driver_version:
      description: The driver version.
      type: str
      sample: 5.15.0
    firmware:
      description: The firmware version, empty when not applicable.
      type: str
      sample: 16.35.2000 (MT_0000000012)
    bus_info:
      description: The bus address (PCI), or what virtual drivers put there.
      type: str
      sample: "0000:03:00.0"
    xdp_features:
      description: The kernel's xdp-features flags for the device, or null when the kernel does not report them.
      type: list
      elements: str
      sample: [basic, redirect, rx_sg]
    xdp_zc_max_segs:
      description: Largest number of segments for AF_XDP zero-copy multi-buffer, null when not reported.
      type: int
      sample: 1
    native:
      description: Native (driver) XDP support, with the reason.
      type: dict
      sample: {supported: "yes", reason: "the kernel reports xdp-features basic,redirect,rx_sg for this device"}
    generic:
      description: Generic (skb) XDP support, with the reason.
      type: dict
      sample: {supported: "yes", reason: "the kernel loads XDP programs; generic XDP works on any device"}
    offload:
      description: Hardware offload support, with the reason.
      type: dict
      sample: {supported: "no", reason: "the kernel reports no hw_offload xdp-feature for this device"}
    max_native_mtu:
      description: The largest MTU a single-buffer native program accepts, null when not known.
      type: int
      sample: 3506
    max_native_mtu_note:
      description: What the MTU figure means or why it is missing.
      type: str
      sample: for a single-buffer program with 4 KiB pages (driver table)
    quirks:
      description: Known caveats of the driver.
      type: list
      elements: str
      sample: ["as an XDP_REDIRECT target the device needs an XDP program attached to it"]
    driver_table:
      description: The driver table entry used, null when the driver is not in it.
      type: str
      sample: veth
    queues:
      description: Queue counts from rtnetlink (C(rx), C(tx)).
      type: dict
      sample: {rx: 4, tx: 4}
    channels:
      description: Channel counts (C(ethtool -l)), null when the driver does not report them.
      type: dict
      sample: {combined: 4, max_combined: 8, rx: 0, tx: 0, other: 0, max_rx: 0, max_tx: 0, max_other: 0}
    attached:
      description: The XDP program attached now (C(mode) native, generic, offload or multi; C(prog_id); C(name)), or null.
      type: dict
      sample: {mode: generic, prog_id: 42, name: xdp_count}
    recommended_mode:
      description: The mode to attach in (native, generic or none).
      type: str
      sample: native
    verdict:
      description: native (runs in the driver), generic (only the skb path), unsupported or unknown.
      type: str
      sample: native
    probe:
      description: What the probe did (C(status) not_requested, skipped, confirmed, refused or failed; C(reason)).
      type: dict
      sample: {status: confirmed, reason: "a pass program attached in native mode and was detached"}
verdict:
  description: The weakest verdict over the reported interfaces (native, generic, unknown, unsupported).
  returned: always
  type: str
  sample: generic
native_interfaces:
  description: The interfaces where native XDP is supported.
  returned: always
  type: list
  elements: str
  sample: [eth1]
requirement_failures:
  description: One message per interface that does not meet O(require).
  returned: always
  type: list
  elements: str
  sample: ["br0: native XDP is required but native is no (the kernel reports no xdp-features for this device)"]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.ebpf.fleet.plugins.module_utils import errors, shared_options, validate
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf, netdev_genl, netlink, probes, xdp_drivers, xdp_hook, xdp_probe

YES = probes.YES


def argument_spec() -> dict:
    return {
        "interfaces": {"type": "list", "elements": "str", "default": []},
        "require": {"type": "str", "choices": list(xdp_drivers.REQUIREMENTS), "default": "none"},
        "probe": {"type": "bool", "default": False},
        # the group's options (doc fragment ebpf.fleet.paths), accepted for module_defaults; nothing is pinned here
        **shared_options.argument_spec(),
    }


def build_module() -> AnsibleModule:
    return AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)


def select_interfaces(all_links: list, wanted: list) -> list:
    """The links to report: the wanted ones in the order given, else every non-loopback link.

    Raises ValueError naming the missing interfaces and the ones that exist.
    """
    by_name = {item["ifname"]: item for item in all_links}
    if not wanted:
        return [item for item in all_links if not item["loopback"]]
    missing = [name for name in wanted if name not in by_name]
    if missing:
        expected = "names of existing interfaces: %s" % ", ".join(sorted(by_name))
        raise errors.InputError(
            "interfaces: %s not found in this network namespace; expected %s" % (", ".join(repr(name) for name in missing), expected),
            field="interfaces",
            value=missing,
            expected=expected,
        )
    seen, result = set(), []
    for name in wanted:
        if name not in seen:
            seen.add(name)
            result.append(by_name[name])
    return result


def interface_report(link: dict, release: str, xdp_prog_type: dict, features) -> dict:
    """Facts and decisions for one link; features is this link's genl answer or None."""
    drv = xdp_probe.driver_facts(link["ifname"])
    flags = features["flags"] if features is not None else None
    decisions = xdp_drivers.assess(drv["driver"], link.get("kind") or "", drv["bus_info"], release, flags, xdp_prog_type)
    report = {
        "ifindex": link["ifindex"],
        "kind": link.get("kind"),
        "mtu": link.get("mtu"),
        "driver": drv["driver"],
        "driver_version": drv["version"],
        "firmware": drv["firmware"],
        "bus_info": drv["bus_info"],
        "xdp_features": flags,
        "xdp_zc_max_segs": features["xdp_zc_max_segs"] if features is not None else None,
        "queues": {"rx": link.get("num_rx_queues", 0), "tx": link.get("num_tx_queues", 0)},
        "channels": drv["channels"],
        "attached": xdp_probe.attached_program(xdp_probe.xdp_state(link)),
        "probe": {"status": "not_requested", "reason": "probe is false"},
    }
    report.update(decisions)
    return report


def apply_probe(report: dict, probe: dict) -> None:
    """A probe result overrides the table or flags for native support."""
    report["probe"] = probe
    if probe["status"] == "confirmed":
        report["native"] = {"supported": YES, "reason": "probe: " + probe["reason"]}
    elif probe["status"] == "refused":
        report["native"] = {"supported": probes.NO, "reason": "probe: " + probe["reason"]}
    else:
        return
    report["recommended_mode"], report["verdict"] = xdp_drivers.recommend(report["native"], report["generic"])


def run(module: AnsibleModule) -> dict:
    params = module.params
    validate.check_params(params)  # interface names: refused before anything is read or probed
    all_links = netlink.links()
    selected = select_interfaces(all_links, params["interfaces"])

    facts = probes.facts()
    features = netdev_genl.xdp_features([item["ifindex"] for item in selected])
    interfaces = {}
    for link in selected:
        report = interface_report(link, facts["release"], facts["prog_types"]["xdp"], None if features is None else features.get(link["ifindex"]))
        if params["probe"]:
            if module.check_mode:
                report["probe"] = {"status": "skipped", "reason": "check mode"}
            elif facts["prog_types"]["xdp"]["supported"] != YES:
                report["probe"] = {"status": "skipped", "reason": "the kernel cannot load XDP programs"}
            else:
                try:
                    apply_probe(report, xdp_probe.probe_native(link["ifindex"]))
                except Exception as exc:  # pylint: disable=broad-except
                    report["probe"] = {"status": "failed", "reason": "probe failed: %s" % exc}
                report["attached"] = xdp_probe.attached_program(xdp_hook.query(link["ifindex"]))
        interfaces[link["ifname"]] = report

    failures = []
    for name, report in interfaces.items():
        message = xdp_drivers.requirement_failure(name, params["require"], report)
        if message:
            failures.append(message)
    return {
        "changed": False,
        "kernel": facts,
        "xdp_features_available": features is not None,
        "interfaces": interfaces,
        "verdict": xdp_drivers.overall_verdict([report["verdict"] for report in interfaces.values()]),
        "native_interfaces": [name for name, report in interfaces.items() if report["native"]["supported"] == YES],
        "requirement_failures": failures,
    }


def main() -> None:
    module = build_module()
    if not netlink.HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib(netlink.PYROUTE2_PACKAGE), exception=str(netlink.PYROUTE2_IMPORT_ERROR))
    if not libbpf.available():
        module.fail_json(msg=missing_required_lib("libbpf 1.x (Debian/Ubuntu package %s)" % libbpf.LIBBPF_PACKAGE))
    with errors.failing(module):
        result = run(module)
    if result["requirement_failures"]:
        result["msg"] = "require=%s not met: %s" % (module.params["require"], "; ".join(result["requirement_failures"]))
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
