/* SPDX-License-Identifier: GPL-2.0 */
/* xdp_lb: maps, keys, values and constants, written once.
 *
 * User space (plugins/module_utils/dataplane/maglev.py computes the entries; the map
 * module writes them) reads these layouts from the object's BTF, so an
 * operator writes e.g. {vip: 192.0.2.10, port: 443, proto: tcp} -> {id: 0,
 * ring: 0, mode: dsr}.
 *
 *   lb_vips_v4 / lb_vips_v6  HASH   (vip, port, proto) -> id, ring row, mode
 *   lb_ring                  ARRAY  ring * ring_size + slot -> backend id
 *   lb_backends              ARRAY  backend id -> family, MAC, address
 *   lb_conntrack_v4 / _v6    LRU_HASH, one LRU list per CPU  5-tuple -> backend id, last seen
 *   lb_config                ARRAY[1]  ring size, LB MAC, tunnel sources, UDP timeout
 *   lb_vip_stats / lb_backend_stats / lb_stats   PERCPU_ARRAY of fleet_counter
 */
#ifndef FLEET_LB_H
#define FLEET_LB_H

#include "fleet/types.h"

#ifndef FLEET_LB_MAX_VIPS
#define FLEET_LB_MAX_VIPS 1024
#endif
#ifndef FLEET_LB_MAX_BACKENDS
#define FLEET_LB_MAX_BACKENDS 4096
#endif
/* lb_ring entries: rows * ring size; the loader sizes it (rows * 65537 by default). */
#ifndef FLEET_LB_RING_ENTRIES
#define FLEET_LB_RING_ENTRIES (16 * 65537)
#endif
/* Connection-table capacity PER CPU, of lb_conntrack_v4 and of lb_conntrack_v6 each. The maps are
 * flagged BPF_F_NO_COMMON_LRU, so the loader (plugins/module_utils/programs/loader.py) creates them with this
 * times the host's possible CPUs, which the kernel splits back into one LRU list per CPU: the same
 * capacity per CPU on a 2-CPU and on a 64-CPU host. Override with -D (xdp_program's `defines`). */
#ifdef FLEET_LB_CONNTRACK_ENTRIES
#error "FLEET_LB_CONNTRACK_ENTRIES (a total split across CPUs) is replaced by FLEET_LB_CONNTRACK_PER_CPU (entries per CPU)"
#endif
#ifndef FLEET_LB_CONNTRACK_PER_CPU
#define FLEET_LB_CONNTRACK_PER_CPU 65536
#endif
#if FLEET_LB_CONNTRACK_PER_CPU < 1
#error "FLEET_LB_CONNTRACK_PER_CPU must be a positive number of entries per CPU"
#endif
#define FLEET_LB_DEFAULT_RING_SIZE 65537
#define FLEET_LB_DEFAULT_UDP_TIMEOUT_MS 30000
#define FLEET_LB_BACKEND_NONE 0xffffffff
#define FLEET_LB_TTL 64

enum fleet_lb_proto {
	FLEET_LB_PROTO_TCP = 6,
	FLEET_LB_PROTO_UDP = 17,
};

/* How a VIP's packets reach the backend. */
enum fleet_lb_mode {
	FLEET_LB_MODE_DSR = 0,	/* L2 direct server return: new MACs, XDP_TX; the backend holds the VIP */
	FLEET_LB_MODE_IPIP = 1, /* IPIP / IP6IP6 (or 4in6, 6in4) to the backend's address, XDP_TX */
};

enum fleet_lb_family {
	FLEET_LB_FAMILY_NONE = 0, /* unused backend slot */
	FLEET_LB_FAMILY_IPV4 = 4,
	FLEET_LB_FAMILY_IPV6 = 6,
};

/* Indexes of lb_stats: one counter per path a packet can take. */
enum fleet_lb_stat {
	FLEET_LB_STAT_PASS_NON_VIP = 0, /* not IP, or not to a VIP (address, port, proto) */
	FLEET_LB_STAT_PASS_UNPARSED,	/* truncated or malformed before the VIP is known */
	FLEET_LB_STAT_PASS_FRAGMENT,	/* IP fragments are never balanced (see docs/lb.md) */
	FLEET_LB_STAT_CT_HIT,		/* established flow: backend from the connection table */
	FLEET_LB_STAT_CT_MISS,		/* not in the table: Maglev pick, inserted */
	FLEET_LB_STAT_SYN,		/* TCP SYN: Maglev pick, table bypassed and overwritten */
	FLEET_LB_STAT_RST,		/* TCP RST not in the table: Maglev pick, not inserted */
	FLEET_LB_STAT_UDP_EXPIRED,	/* UDP entry older than the timeout: picked again */
	FLEET_LB_STAT_DROP_NO_BACKEND,	/* VIP without a usable backend */
	FLEET_LB_STAT_DROP_ENCAP,	/* encapsulation impossible (no tunnel source, no headroom) */
	FLEET_LB_STAT_TX,		/* forwarded (XDP_TX) */
	FLEET_LB_STAT_MAX,
};

struct fleet_lb_vip4_key {
	fleet_ipv4_t vip;
	fleet_port_t port;
	__u16 pad;
	enum fleet_lb_proto proto;
};

struct fleet_lb_vip6_key {
	fleet_ipv6_t vip;
	fleet_port_t port;
	__u16 pad;
	enum fleet_lb_proto proto;
};

struct fleet_lb_vip {
	__u32 id;   /* lb_vip_stats index */
	__u32 ring; /* row of lb_ring: write a new row, then flip this to swap atomically */
	enum fleet_lb_mode mode;
};

struct fleet_lb_backend {
	enum fleet_lb_family family;
	fleet_mac_t mac; /* DSR: the backend's MAC; IPIP: the next hop's MAC */
	__u16 pad;
	fleet_ipv4_t addr4; /* IPIP outer destination (family ipv4) */
	fleet_ipv6_t addr6; /* IP6IP6 outer destination (family ipv6) */
};

struct fleet_lb_config {
	__u32 ring_size;      /* slots per ring row (prime, e.g. 65537); 0: the default */
	__u32 udp_timeout_ms; /* UDP connection-table entries older than this are re-picked; 0: 30 s */
	fleet_mac_t lb_mac;   /* source MAC of forwarded frames; all zero: the frame's destination MAC */
	__u16 pad;
	struct fleet_lpm_v4 tunnel_src_v4; /* outer IPv4 source: this prefix, host bits from the flow hash */
	struct fleet_lpm_v6 tunnel_src_v6; /* outer IPv6 source: this prefix, low 32 bits from the flow hash */
};

/* Connection-table keys: the flow's 5-tuple (a short key for IPv4: cheaper to hash). */
struct fleet_lb_flow4 {
	fleet_ipv4_t src;
	fleet_ipv4_t dst;
	fleet_port_t sport;
	fleet_port_t dport;
	__u8 proto;
	__u8 pad[3];
};

struct fleet_lb_flow6 {
	fleet_ipv6_t src;
	fleet_ipv6_t dst;
	fleet_port_t sport;
	fleet_port_t dport;
	__u8 proto;
	__u8 pad[3];
};

struct fleet_lb_conn {
	__u32 backend;
	__u32 pad;
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last packet (UDP timeout) */
};

#endif
