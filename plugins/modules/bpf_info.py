#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bpf_info
short_description: Report the XDP and TC programs of a host and this collection's deployments
description:
  - Read-only. Per interface, the XDP programs (with their mode, and whether a bpf_link holds them) and the TC
    programs on ingress and egress (TCX links and clsact filters), this collection's and other tools', each marked
    C(managed).
  - Programs of this collection's chains that run by tail call behind the attached one are listed after it.
  - This collection's deployments from their records and pins (under O(pin_root) and O(state_dir)), with versions,
    pinned programs and pinned maps; map contents on request, per-CPU counters summed.
  - On request, whether each deployment's kernel state drifted from its records (O(check_records)) and its counters
    (O(counters)).
  - An optional JMESPath O(query) reduces the result.
  - While a commit-confirmed change (M(ebpf.fleet.bpf_checkpoint)) is armed on the host and has taken its first step, a
    run outside check mode starts the change's confirm window again, as the change's own steps do, since the
    controller is still working on the host (a role's checks between two steps on a slow host). It never confirms a
    change.
version_added: "0.1.0"
author: ebpf.fleet contributors (@ebpf-fleet)
extends_documentation_fragment:
  - ebpf.fleet.attributes
  - ebpf.fleet.paths
attributes:
  check_mode:
    support: full
    details: The module changes nothing; in check mode it does not move an armed change's confirm window either.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: linux
options:
  interfaces:
    description:
      - Interfaces to report; every interface of the host's network namespace when empty.
    type: list
    elements: str
    default: []
  contents:
    description:
      - Include the entries of the deployments' pinned maps, in the notation M(ebpf.fleet.bpf_map) takes, keys and
        values decoded through BTF (enums by name, addresses, structs by member), in hex when there is none.
      - A map the kernel holds no BTF for (libbpf creates it without when the kernel refuses its types, as for
        C(lb_stats), an array keyed by C(enum fleet_lb_stat)) is typed through the deployment's recorded object.
      - "Counter keys computed from enums (C(filter_stats), C(egress_stats)) read back as their parts by name,
        C({reason: port, verdict: drop}), from the C(struct fleet_key_<map>) the program's BTF carries."
    type: bool
    default: false
  per_cpu:
    description:
      - For per-CPU maps with O(contents=true), V(list) gives one value per CPU; V(sum) gives one view in which only
        counters are added up.
      - A counter is a member of C(struct fleet_counter) (C(packets), C(bytes), the counter type of the
        collection's programs) or a per-CPU value that is itself a plain unsigned integer.
      - Any other member (a connection-table entry's backend id or timestamp, an enum, an address) is shown once
        when every CPU holds the same value, else as the list of its per-CPU values. In hex (no BTF) nothing is
        added up.
    type: str
    choices: [sum, list]
    default: sum
  max_entries:
    description:
      - At most this many entries per map with O(contents=true) (the map's C(truncated) tells when there were more).
    type: int
    default: 1000
  check_records:
    description:
      - Compare each deployment with its records and add RV(deployments.drift) (V(in_sync) or V(drifted), and why).
      - "A hook drifted when it does not run the recorded chain: the program detached, replaced or attached by
        another tool (C(ip link set dev eth0 xdp off), C(bpftool)), a chain slot rewritten, another object than the
        recorded one, another XDP mode."
      - "A map drifted when it does not hold the contents last declared through M(ebpf.fleet.bpf_map) (an entry
        changed, added or deleted by hand); the report names the map and up to five keys. Counters and connection
        tables are never declared, so they never drift."
      - Pins without a record (a deployment left behind half-removed) are reported as drifted too.
    type: bool
    default: false
  counters:
    description:
      - Add RV(deployments.counters), the deployment's counter maps (values of C(struct fleet_counter), such as
        C(filter_stats), C(lb_stats), C(egress_stats)) summed over CPUs, per counter by name and per verdict.
    type: bool
    default: false
  query:
    description:
      - A JMESPath expression applied to C({interfaces, deployments}); the module then returns only RV(query_result).
      - Needs the Python library C(jmespath) on the host.
    type: str
requirements:
  - libbpf 1.x (Debian package libbpf1)
  - pyroute2
  - jmespath (only with O(query))
"""

EXAMPLES = r"""
- name: Everything on the uplink
  ebpf.fleet.bpf_info:
    interfaces: [ens3]
  register: bpf

- name: Programs attached by other tools, on any interface
  ebpf.fleet.bpf_info:
    query: "values(interfaces)[].xdp.programs[] | [?!managed]"
  register: foreign

- name: Deployments whose kernel state drifted from their records, and why
  ebpf.fleet.bpf_info:
    check_records: true
    query: "deployments.* | [?drift.state == 'drifted'].drift.reasons[]"
  register: drifted

- name: Drop counters of the guard deployment, summed over CPUs
  ebpf.fleet.bpf_info:
    contents: true
    query: "deployments.udp_guard.maps.drops.entries"
  register: drops
"""

RETURN = r"""
interfaces:
  description:
    - Per interface, V(xdp) (mode, programs) and V(tc_ingress) / V(tc_egress) (programs).
    - Each program has V(id), V(name), V(tag), V(type), V(via) (V(xdp_link), V(netlink), V(tcx), V(clsact),
      V(tail_call)), V(managed) and V(deployment) (when managed), and V(position) in the collection's chain.
  returned: when query is not set
  type: dict
  sample:
    ens3:
      ifindex: 2
      xdp:
        mode: native
        programs:
          - {id: 812, name: xdp_drop_udp, tag: 3b185187f1855c4c, type: xdp, via: xdp_link, link_id: 31,
             managed: true, deployment: udp_guard, mode: native, position: 1, map_ids: [40], run_cnt: 0,
             run_time_ns: 0}
      tc_ingress: []
      tc_egress:
        - {id: 97, name: cls_main, tag: 1c2f0b3a9d7e4411, type: sched_cls, via: clsact, pref: 49152, handle: 1,
           filter_name: "main.o:[tc]", managed: false, deployment: null, map_ids: [], run_cnt: 0, run_time_ns: 0}
deployments:
  description:
    - Per deployment of this collection, its record (hook, interfaces, program, priority, version, versions,
      object checksum) and its pins (V(programs) per hook, V(maps) with their layout, and entries with
      O(contents=true)).
  returned: when query is not set
  type: dict
  sample:
    udp_guard:
      recorded: true
      hook: xdp
      interfaces: [ens3]
      program: xdp_drop_udp
      priority: 10
      mode: native
      compiler: null
      object_sha256: 9f2c0d1e
      version: 2
      versions: [{sha256: 1a2b3c, deployed: "2025-01-01T10:00:00Z"}, {sha256: 9f2c0d1e, deployed: "2025-02-01T10:00:00Z"}]
      updated: "2025-02-01T10:00:00Z"
      programs: {"xdp@ens3": {id: 812, name: xdp_drop_udp, tag: 3b185187f1855c4c, type: xdp}}
      maps:
        drops: {id: 40, type: percpu_array, key_size: 4, value_size: 16, max_entries: 2, map_flags: 0,
                pin: /sys/fs/bpf/ebpf_fleet/udp_guard/maps/drops, notation: typed, truncated: false,
                entries: [{key: 0, value: {packets: 1520, bytes: 97280}}]}
  contains:
    drift:
      description:
        - With O(check_records=true). V(state) is V(in_sync) or V(drifted); V(reasons) says what drifted, one
          sentence each.
        - V(hooks), per hook the deployment is recorded on, V(in_sync), V(reason), V(position) in the chain, V(mode)
          and V(recorded_mode), V(prog_id) running and V(recorded_prog_id), V(tag), V(version).
        - V(maps), per map with recorded contents, V(in_sync), V(reason), the number of declared entries V(missing)
          and V(changed), of entries V(extra) (not declared, for a map declared with mode sync), and up to five
          V(keys) in the notation of M(ebpf.fleet.bpf_map).
      returned: with check_records=true
      type: dict
      sample:
        state: drifted
        reasons: ["map filter_v4: 1 changed by hand (203.0.113.0/24)"]
        hooks: [{hook: xdp, interface: ens3, in_sync: true, reason: null, position: 1, mode: native,
                 recorded_mode: native, prog_id: 812, recorded_prog_id: 812, tag: 3b185187f1855c4c, version: 2}]
        maps: [{map: filter_v4, in_sync: false, reason: "map filter_v4: 1 changed by hand (203.0.113.0/24)",
                missing: 0, changed: 1, extra: 0, keys: [203.0.113.0/24]}]
    counters:
      description:
        - With O(counters=true), per counter map, V(counters) (per counter by name, V(packets) and V(bytes)) and
          V(verdicts) (packets per verdict, when the keys name one).
      returned: with counters=true
      type: dict
      sample:
        filter_stats:
          counters: {port_drop: {packets: 12, bytes: 888}, default_pass: {packets: 40, bytes: 2960}}
          verdicts: {drop: 12, pass: 40}
query_result:
  description: The result of O(query).
  returned: when query is set
  type: raw
  sample: [{key: 0, value: {packets: 1520, bytes: 97280}}]
"""

import socket
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.ebpf.fleet.plugins.module_utils import errors, validate
from ansible_collections.ebpf.fleet.plugins.module_utils.host import bpf_inventory, drift, records
from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import bpffs, libbpf, netlink

try:
    import jmespath

    HAS_JMESPATH = True
    JMESPATH_IMPORT_ERROR = None
except ImportError:
    jmespath = None
    HAS_JMESPATH = False
    JMESPATH_IMPORT_ERROR = traceback.format_exc()


def argument_spec() -> dict:
    return dict(
        interfaces=dict(type="list", elements="str", default=[]),
        pin_root=dict(type="path", default=bpffs.PIN_ROOT_DEFAULT),
        state_dir=dict(type="path", default=records.STATE_DIR_DEFAULT),
        contents=dict(type="bool", default=False),
        per_cpu=dict(type="str", default="sum", choices=["sum", "list"]),
        max_entries=dict(type="int", default=1000),
        check_records=dict(type="bool", default=False),
        counters=dict(type="bool", default=False),
        query=dict(type="str"),
    )


def build_module() -> AnsibleModule:
    return AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)


def main() -> None:
    module = build_module()
    with errors.failing(module):
        run(module)


def run(module: AnsibleModule) -> None:
    """Read and report; exits the module."""
    params = module.params
    if params["query"] and not HAS_JMESPATH:
        module.fail_json(msg=missing_required_lib("jmespath"), exception=JMESPATH_IMPORT_ERROR)
    if not netlink.HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib(netlink.PYROUTE2_PACKAGE), exception=str(netlink.PYROUTE2_IMPORT_ERROR))
    if not libbpf.available():
        module.fail_json(msg="libbpf 1.x is required (Debian package %s)" % libbpf.LIBBPF_PACKAGE)
    validate.check_params(params)  # interfaces, pin_root, state_dir: refused before anything is read
    if params["max_entries"] < 1:
        module.fail_json(msg="max_entries=%d: expected a positive integer" % params["max_entries"])
    known = [name for _index, name in socket.if_nameindex()]
    missing = [name for name in params["interfaces"] if name not in known]
    if missing:
        module.fail_json(msg="interfaces: %s not found in this network namespace; interfaces here: %s" % (", ".join(missing), ", ".join(sorted(known))))
    compiled = None
    if params["query"]:
        try:
            compiled = jmespath.compile(params["query"])
        except jmespath.exceptions.JMESPathError as exc:
            module.fail_json(msg="query=%r is not a valid JMESPath expression: %s" % (params["query"], exc))
    facts = {
        "interfaces": bpf_inventory.interfaces(params["interfaces"], params["pin_root"], params["state_dir"]),
        "deployments": bpf_inventory.deployments(params["pin_root"], params["state_dir"], params["contents"], params["per_cpu"], params["max_entries"]),
    }
    for name, item in facts["deployments"].items():
        if params["check_records"]:
            item["drift"] = drift.check(params["state_dir"], name, params["pin_root"])
        if params["counters"]:
            item["counters"] = bpf_inventory.counters(params["pin_root"], params["state_dir"], name)
    if not module.check_mode:
        records.note_contact(params["state_dir"])  # an armed change's confirm window starts again (checkpoint.py)
    if compiled is not None:
        try:
            result = compiled.search(facts)
        except jmespath.exceptions.JMESPathError as exc:  # a function given the wrong type (null for a missing key)
            module.fail_json(msg="query=%r cannot be evaluated on this host's data: %s" % (params["query"], exc))
        module.exit_json(changed=False, query_result=result)
    module.exit_json(changed=False, **facts)


if __name__ == "__main__":
    main()
