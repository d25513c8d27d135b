#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: lb_tables
short_description: Declare the VIPs and backends of a running XDP load balancer (xdp_lb)
description:
  - Brings the maps of an C(xdp_lb) deployment (C(bpf/xdp_lb.c), loaded with M(ebpf.fleet.xdp_program)) to the
    declared VIPs, backends and configuration. The Maglev rings are computed on the host, so 65,537 ring entries
    per VIP never travel as task arguments.
  - Everything is read from the deployment's maps; no state is kept on the controller, and the plan reads no
    file on the host (the record written for the restore at boot is never read back by this module). A backend is
    known by its address, as in C(lb_backends) - it keeps its id as long as a VIP declares it, so adding,
    removing, reweighting or draining one backend never changes another backend's id, and the connection table's
    established flows keep their backend. A new backend takes the lowest free id; a backend that no VIP declares
    any more is freed (family none) after no ring refers to it. A VIP, known by (address, port, protocol), keeps
    its id.
  - A changed ring is written into a free row of C(lb_ring) (a row no VIP refers to) with one batch update, then
    the VIP's C(ring) field is flipped with one update, which swaps the ring atomically for the data plane; the
    old row is free from then on. C(lb_ring) holds its size divided by O(ring_size) rows, and a swap needs one
    spare row.
  - The whole declaration is validated before the first write; an unknown or misspelt field fails naming the
    field, the value and what was expected.
  - After a run that wrote (or when the record is missing), outside check mode, the tables are recorded in the
    deployment's record folder under I(state_dir) (C(<state_dir>/<name>/maps/<map>.entries)), from which the
    host restores them at boot (C(ebpf-fleet-host restore)); the connection tables are never recorded.
version_added: 0.1.0
author: ebpf.fleet contributors (@ebpf-fleet)
extends_documentation_fragment:
  - ebpf.fleet.attributes
  - ebpf.fleet.paths
attributes:
  check_mode:
    support: full
    details: Computes the same plan from the live maps and writes nothing; on a host where the deployment is not
      loaded yet it predicts a first deploy.
  diff_mode:
    support: full
    details: VIPs and backends added, removed, drained or reweighted, and for each changed ring how many slots move.
  platform:
    support: full
    platforms: linux
options:
  name:
    description:
      - The C(xdp_lb) deployment (the O(ebpf.fleet.xdp_program#module:name) it was loaded with); its maps are
        pinned at O(pin_root)/O(name)/maps.
    type: str
    required: true
  vips:
    description:
      - "The VIPs, each C({vip: 192.0.2.10, port: 443, proto: tcp, mode: dsr, backends: [{address: 198.51.100.1,
        mac: '02:00:00:00:00:01', weight: 1, name: optional}]})."
      - C(proto) is V(tcp) (default) or V(udp); C(mode) is V(dsr) (default; C(mac) is the backend's) or V(ipip)
        (C(mac) is the next hop's). C(backends) is required (an empty list drops the VIP's new flows).
      - C(weight) defaults to 1; weight 0 drains the backend (it keeps its id and entry, so its established flows
        go on, and gets no new flow). C(name) is the backend's Maglev permutation key (default its address).
      - VIPs of the deployment that are not listed are removed.
    type: list
    elements: dict
    required: true
  config:
    description:
      - The other fields of C(lb_config) - C(udp_timeout_ms) (0 means 30 s), C(lb_mac) (source MAC of forwarded
        frames; all zero keeps the frame's destination MAC), C(tunnel_src_v4) and C(tunnel_src_v6) (prefixes of
        the IPIP / IP6IP6 outer source; V(0.0.0.0/0) and V(::/0) mean none). See docs/lb.md.
    type: dict
    default: {}
  ring_size:
    description:
      - Slots of each VIP's ring, a prime with at least 100 slots per backend of a VIP.
      - The ring size of a running load balancer with VIPs cannot change in place.
    type: int
    default: 65537
notes:
  - Load C(bpf/xdp_lb.c) first with M(ebpf.fleet.xdp_program); this module only writes the maps.
  - The filter P(ebpf.fleet.maglev_entries#filter) computes the same rings on the controller, but it keeps ids only
    when given the previous ones back; deploy with this module.
requirements:
  - libbpf 1.x (Debian package libbpf1)
seealso:
  - module: ebpf.fleet.xdp_program
  - module: ebpf.fleet.bpf_info
"""

EXAMPLES = r"""
- name: Load the load balancer on the uplink
  ebpf.fleet.xdp_program:
    name: lb
    src: "{{ lookup('ansible.builtin.env', 'HOME') }}/ebpf_fleet/bpf/xdp_lb.c"
    interfaces: [eth1]

- name: Declare its VIPs and backends
  ebpf.fleet.lb_tables:
    name: lb
    config:
      tunnel_src_v4: 203.0.113.0/24
    vips:
      - vip: 192.0.2.10
        port: 443
        backends:
          - {address: 198.51.100.1, mac: "02:00:00:00:00:01", weight: 2}
          - {address: 198.51.100.2, mac: "02:00:00:00:00:02"}
          - {address: 198.51.100.3, mac: "02:00:00:00:00:03", weight: 0}  # draining
      - vip: 2001:db8::10
        port: 53
        proto: udp
        mode: ipip
        backends:
          - {address: "2001:db8:1::1", mac: "02:00:00:00:00:fe"}
"""

RETURN = r"""
recorded:
  description: The maps whose contents were recorded for the restore at boot (empty when nothing was recorded).
  returned: success
  type: list
  elements: str
  sample: ["lb_config", "lb_backends", "lb_vips_v4", "lb_vips_v6", "lb_ring"]
vips:
  description: The VIPs after the run, with their id, ring row and backends (with their ids).
  returned: success
  type: list
  elements: dict
  sample: [{"vip": "192.0.2.10", "port": 443, "proto": "tcp", "mode": "dsr", "id": 0, "ring": 1,
            "backends": [{"address": "198.51.100.1", "id": 0, "weight": 2, "name": "198.51.100.1"}]}]
backend_ids:
  description: Backend address to its id in C(lb_backends) (drained backends included).
  returned: success
  type: dict
  sample: {"198.51.100.1": 0, "198.51.100.2": 1}
changes:
  description:
    - What the run changes (or would change, in check mode), in the operator's notation. A changed ring lists
      its rows before and after, how many slots move and the backends whose slots change - V(added),
      V(removed), V(drained), V(restored) (weight back from 0), V(reweighted), or V(rebalanced) (slots moved
      because other backends changed). The kernel keeps no weights, so a reweight is recognised from the old
      ring's shares.
  returned: success
  type: dict
  sample: {"config": {}, "backends_added": [{"address": "198.51.100.3", "id": 2, "mac": "02:00:00:00:00:03"}],
           "backends_updated": [], "backends_removed": [], "vips_added": [], "vips_removed": [],
           "vips_changed": [{"vip": "192.0.2.10:443/tcp", "id": 0, "mode": "dsr", "ring": [0, 1],
                             "backends": 3, "slots_moved": 21845,
                             "backend_changes": [{"backend": "198.51.100.3", "id": 2, "change": "added",
                                                  "slots": [0, 21845]}]}]}
applied:
  description: Map updates made (a ring row written with one batch counts one; 0 in check mode).
  returned: always
  type: int
  sample: 3
rows:
  description: Rows of C(lb_ring) at this ring size (VIPs plus at least one spare row for a swap).
  returned: success
  type: int
  sample: 16
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ebpf.fleet.plugins.module_utils import shared_options

try:
    from ansible_collections.ebpf.fleet.plugins.module_utils import errors, validate
    from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import maglev, xdp_lb_entries
    from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import xdp_lb_tables as lbt
    from ansible_collections.ebpf.fleet.plugins.module_utils.kernel import libbpf

    HAS_DEPS = True
    DEPS_ERROR = None
except ImportError as import_exc:  # pragma: no cover - the collection's own code is always there
    HAS_DEPS = False
    DEPS_ERROR = import_exc


def argument_spec() -> dict:
    return dict(
        name=dict(type="str", required=True),
        vips=dict(type="list", elements="dict", required=True),
        config=dict(type="dict", default={}),
        ring_size=dict(type="int", default=65537),
        **shared_options.argument_spec(),
    )


def build_module() -> AnsibleModule:
    return AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)


def run(module: AnsibleModule) -> dict:
    """Validate, read, plan, then apply unless in check mode. Raises LbTablesError / MaglevError / CodecError."""
    params = module.params
    validate.check_params(params)  # name, pin_root, state_dir: refused before anything is read
    # the whole declaration first: nothing is opened before it is known to be valid
    vips = xdp_lb_entries.validate_vips(params["vips"])
    config = lbt.check_config(params["config"])
    ring_size = params["ring_size"]
    if not maglev.is_prime(ring_size):
        raise maglev.MaglevError("ring_size %r: expected a prime number (e.g. 65537)" % (ring_size,))
    xdp_lb_entries.lb_config(ring_size=ring_size, **config)
    dep = lbt.Deployment(params["pin_root"], params["name"])
    missing = dep.missing()
    if missing:
        if len(missing) < len(lbt.MAPS) or not module.check_mode:
            raise lbt.LbTablesError(
                "deployment %s has no map %s under %s: load bpf/xdp_lb.c with ebpf.fleet.xdp_program name=%s "
                "first (and check pin_root)" % (params["name"], ", ".join(missing), dep.folder, params["name"]),
                applied=0,
            )
        # check mode on a host where the load balancer is not loaded yet: predict a first deploy
        state = lbt.empty_state(ring_size)
        plan = lbt.make_plan(vips, config, ring_size, state, None)
        return _result(module, plan, state, 0, None)
    dep.open()
    try:
        state = lbt.read_state(dep, ring_size)
        codecs = {name: dep[name].codec for name in lbt.MAPS}
        plan = lbt.make_plan(vips, config, ring_size, state, codecs)
        encoded = lbt.encode_plan(plan, dep)  # every entry encodes before the first write
        applied = 0
        recorded = []
        if not module.check_mode:
            if not plan.empty:
                applied = lbt.apply(plan, dep, ring_size, encoded)
            recorded = lbt.record(dep, params["state_dir"], params["name"], not plan.empty)
        result = _result(module, plan, state, applied, state.rows)
        result["recorded"] = recorded
        return result
    finally:
        dep.close()


def _result(module: AnsibleModule, plan, state, applied: int, rows) -> dict:
    changes = lbt.describe(plan, state)
    result = {
        "changed": not plan.empty,
        "vips": lbt.summary(plan),
        "backend_ids": dict(sorted(plan.backend_ids.items(), key=lambda kv: kv[1])),
        "changes": changes,
        "applied": applied,
        "rows": rows,
    }
    if module._diff:
        result["diff"] = lbt.diff_text(changes)
    return result


def main() -> None:
    module = build_module()
    if not HAS_DEPS:
        module.fail_json(msg="the collection's module_utils could not be imported: %s" % DEPS_ERROR)
    if not libbpf.available():
        module.fail_json(msg="libbpf 1.x is required on the host (Debian/Ubuntu package %s)" % libbpf.LIBBPF_PACKAGE)
    with errors.failing(module, applied=0):
        result = run(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
