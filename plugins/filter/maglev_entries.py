# -*- coding: utf-8 -*-
# Copyright: ebpf.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: maglev_entries
short_description: VIP declarations to the map entries of the XDP load balancer, computed on the controller
version_added: 0.1.0
author: ebpf.fleet contributors (@ebpf-fleet)
description:
  - Turns load-balancer VIP declarations into the entries of the maps of C(bpf/xdp_lb.c) (C(lb_vips_v4),
    C(lb_vips_v6), C(lb_backends), C(lb_ring), C(lb_config)) in M(ebpf.fleet.bpf_map) notation, to inspect or
    test the tables a declaration gives.
  - B(To deploy a load balancer use M(ebpf.fleet.lb_tables)), which reads the running ids from the kernel (so
    adding, removing or draining a backend never renumbers another one and established flows keep their backend),
    computes the rings on the host and swaps each changed ring atomically through a spare row. This filter knows
    only what it is given - without O(backend_ids) and O(vip_ids) of the running configuration it numbers backends
    from 0 by sorted name, and every VIP's ring is written in place at row = VIP id.
  - Each VIP gets a weighted Maglev ring; every controller computes the same rings for the same input, and
    M(ebpf.fleet.lb_tables) computes the same rings for the same declaration (see docs/lb.md).
  - Bad input fails with an error naming the field (for example C(vips[0].backends[1].weight)), the value and what
    was expected; an unknown or misspelt field (C(backend), C(wieght)) fails at every level instead of being
    ignored.
positional: _input
options:
  _input:
    description:
      - "The VIPs: a list of C({vip: 192.0.2.10, port: 443, proto: tcp, mode: dsr, backends: [{address: 198.51.100.1,
        mac: '02:00:00:00:00:01', weight: 1, name: optional}]}); no other field is accepted."
      - C(proto) is V(tcp) (default) or V(udp); C(mode) is V(dsr) (default, C(mac) is the backend's) or V(ipip)
        (C(mac) is the next hop's). C(backends) is required (an empty list drops the VIP's new flows). A backend
        of weight 0 is draining (no new flows).
    type: list
    elements: dict
    required: true
  ring_size:
    description: Slots of each VIP's ring, a prime (at least 100 per backend).
    type: int
    default: 65537
  backend_ids:
    description:
      - The backend ids of the running configuration (RV(_value.backend_ids) of an earlier run), kept so that
        established flows and counters stay with their backend; new backends take the lowest free id.
      - Without them every backend is numbered afresh; M(ebpf.fleet.lb_tables) reads them from the kernel instead.
    type: dict
    default: {}
  vip_ids:
    description: The VIP ids of the running configuration (RV(_value.vip_ids) of an earlier run), kept likewise.
    type: dict
    default: {}
  config:
    description:
      - The C(lb_config) fields other than the ring size, C({udp_timeout_ms, lb_mac, tunnel_src_v4,
        tunnel_src_v6}); see docs/lb.md.
    type: dict
    default: {}
"""

EXAMPLES = r"""
# To deploy, declare the VIPs with the lb_tables module (ids read from the kernel, rings swapped atomically):
- name: Declare the load balancer's VIPs
  ebpf.fleet.lb_tables:
    name: lb
    vips: "{{ vips }}"
    config:
      tunnel_src_v4: 203.0.113.0/24
  vars:
    vips:
      - vip: 192.0.2.10
        port: 443
        backends:
          - {address: 198.51.100.1, mac: "02:00:00:00:00:01", weight: 2}
          - {address: 198.51.100.2, mac: "02:00:00:00:00:02"}

# The filter shows the tables a declaration gives, e.g. how a weight spreads over the ring:
- name: Count the slots of the backend of weight 2 (about two thirds of the ring)
  ansible.builtin.debug:
    msg: "{{ tables.maps.lb_ring | map(attribute='value') | select('equalto', tables.backend_ids['198.51.100.1'])
             | list | length }}"
  vars:
    tables: "{{ vips | ebpf.fleet.maglev_entries(ring_size=1009) }}"
    vips:
      - vip: 192.0.2.10
        port: 443
        backends:
          - {address: 198.51.100.1, weight: 2}
          - {address: 198.51.100.2}
"""

RETURN = r"""
_value:
  description: The tables.
  type: dict
  contains:
    maps:
      description:
        - "Map name to its entries in M(ebpf.fleet.bpf_map) notation (C({key: ..., value: ...}) items):
          C(lb_vips_v4), C(lb_vips_v6) (key C({vip, port, proto}), value C({id, ring, mode})), C(lb_backends)
          (backend id to C({family, mac, addr4, addr6})), C(lb_ring) (row * ring size + slot to backend id),
          C(lb_config) (key 0)."
      type: dict
    backend_ids:
      description: Backend name (its C(name) or address) to id; give it back as O(backend_ids) on the next change.
      type: dict
    vip_ids:
      description: VIP (C(address:port/proto)) to id and ring row; give it back as O(vip_ids).
      type: dict
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.ebpf.fleet.plugins.module_utils.dataplane import maglev, xdp_lb_entries
from ansible_collections.ebpf.fleet.plugins.plugin_utils import filter_rules

CONFIG_FIELDS = xdp_lb_entries.CONFIG_FIELDS


def maglev_entries(vips, ring_size=maglev.DEFAULT_RING_SIZE, backend_ids=None, vip_ids=None, config=None):
    """VIP declarations -> {maps: {map: entries}, backend_ids, vip_ids} (xdp_lb_entries.lb_entries and friends)."""
    vips = filter_rules.items_of(vips, "VIP declarations {vip, port, proto, mode, backends}", name="vips")
    if not filter_rules.is_int(ring_size):
        filter_rules.fail("ring_size", "", ring_size, "a prime number such as 65537")
    for name, ids in (("backend_ids", backend_ids), ("vip_ids", vip_ids)):
        if ids is not None and not isinstance(ids, Mapping):
            filter_rules.fail(name, "", ids, "a dict of name to id from an earlier run's %s" % name)
    config = config or {}
    if not isinstance(config, Mapping):
        filter_rules.fail("config", "", config, "a dict with some of %s" % ", ".join(CONFIG_FIELDS))
    filter_rules.check_fields(config, "config", CONFIG_FIELDS)
    try:
        tables = xdp_lb_entries.lb_entries(vips, ring_size=ring_size, backend_ids=dict(backend_ids or {}), vip_ids=dict(vip_ids or {}))
        lb_config = xdp_lb_entries.lb_config(ring_size=ring_size, **config)
        ring = []
        for row in sorted(tables["lb_ring"]):
            ring.extend(xdp_lb_entries.ring_entries(row, tables["lb_ring"][row], ring_size))
    except maglev.MaglevError as exc:
        raise AnsibleFilterError("maglev_entries: %s" % exc) from None

    def items(pairs):
        return [{"key": key, "value": value} for key, value in pairs]

    return {
        "maps": {
            "lb_config": [{"key": 0, "value": lb_config}],
            "lb_backends": items(tables["lb_backends"]),
            "lb_ring": items(ring),
            "lb_vips_v4": items(tables["lb_vips_v4"]),
            "lb_vips_v6": items(tables["lb_vips_v6"]),
        },
        "backend_ids": tables["backend_ids"],
        "vip_ids": tables["vip_ids"],
    }


class FilterModule:
    """ebpf.fleet.maglev_entries"""

    def filters(self):
        return {"maglev_entries": maglev_entries}
