/* SPDX-License-Identifier: GPL-2.0 */
/* tc_egress: the layouts of its maps, written once (user space reads them
 * from BTF).
 *
 * A packet is put in a class by, in order:
 *   1. its skb mark (set earlier: by a socket, by nftables, or by an ingress
 *      program): marks below FLEET_EGRESS_MARKS_DIRECT in the array
 *      egress_mark_classes (indexed by the mark), larger ones in the hash
 *      egress_marks;
 *   2. the longest destination prefix, when its rule's proto/port (0: any)
 *      match: IPv4 in a stride table (filled by
 *      plugins/module_utils/dataplane/xdp_filter_tables.py as for xdp_filter, split by
 *      tc_egress_tables.py): its /16 level in the array egress_dst_v4_16
 *      (indexed by the address's first 16 bits), its /24 level in the hash
 *      egress_dst_v4_24 (with a bitmap of the addresses of that /24 that
 *      have a /32 entry, so a miss at /32 costs no lookup), its /32 level in
 *      the hash egress_dst_v4_32; IPv6 in the LPM trie egress_dst_v6;
 *   3. its destination port in egress_ports (an array indexed by the port
 *      number, a class per protocol: one lookup, no hashing);
 *   4. egress_config.default_class.
 * The class (egress_classes) decides: pass or drop (the ACL), the DSCP to
 * write (ECN bits kept; IPv4 checksum updated incrementally), the
 * skb priority, and a byte rate that either drops what exceeds it (a token
 * bucket of burst_bytes, kept as an earliest departure time: see
 * fleet_egress_bucket) or paces (earliest departure time in skb->tstamp, for
 * the fq qdisc).
 */
#ifndef FLEET_EGRESS_H
#define FLEET_EGRESS_H

#include "fleet/types.h"
#include "fleet/filter.h"

#define FLEET_EGRESS_CLASSES 64
#define FLEET_EGRESS_RULES_MAX 65536
#define FLEET_EGRESS_MARKS_DIRECT 65536 /* marks below: egress_mark_classes; others: egress_marks */

enum fleet_egress_outcome {
	FLEET_EGRESS_PASS = 0,
	FLEET_EGRESS_DROP = 1,	       /* the class's action is drop (ACL) */
	FLEET_EGRESS_RATE_LIMITED = 2, /* over the class rate, limit "drop" */
	FLEET_EGRESS_PACED = 3,	       /* sent with a departure time in the future */
	FLEET_EGRESS_OVER_HORIZON = 4, /* pacing would delay it past the horizon: dropped */
	FLEET_EGRESS_OUTCOMES = 8,     /* stride of egress_stats: key = class * 8 + outcome */
};

enum fleet_egress_limit {
	FLEET_EGRESS_LIMIT_NONE = 0,
	FLEET_EGRESS_LIMIT_DROP = 1,
	FLEET_EGRESS_LIMIT_PACE = 2,
};

/* egress_classes[class id] */
struct fleet_egress_class {
	enum fleet_verdict action; /* pass or drop */
	enum fleet_egress_limit limit;
	__u8 set_dscp; /* not 0: write dscp */
	__u8 dscp;     /* 0..63 */
	__u16 pad;
	__u32 priority;	   /* not 0: skb->priority */
	__u64 rate_bps;	   /* bytes per second */
	__u64 burst_bytes; /* drop: bytes that may leave back to back after an idle time */
	__u64 horizon_ns;  /* pace: the furthest departure accepted */
	/* Derived from rate_bps and burst_bytes, so that a packet costs no
	 * division: tc_egress_tables.class_value() fills them; when derived_rate_bps
	 * or derived_burst_bytes differ from rate_bps / burst_bytes (a writer that
	 * left them out), the program recomputes them, the same way, on the next
	 * packet of the class. */
	__u64 ns_per_byte; /* 32.32 fixed point: (10^9 << 32) / rate_bps */
	__u64 burst_ns;	   /* min(burst_bytes, 2^32 - 1) bytes at rate_bps, in ns */
	__u64 derived_rate_bps;
	__u64 derived_burst_bytes;
};

/* Value of egress_dst_v6 (key: fleet_lpm_v6 CIDR) and of egress_dst_v4_32
 * (key: the IPv4 address, network order); part of the stride entries. */
struct fleet_egress_rule {
	__u32 class_id;
	enum fleet_proto proto; /* 0: any protocol */
	fleet_port_t port;	/* 0: any port */
	__u16 pad;
};

/* Value of egress_dst_v4_16 (index: the address's first 16 bits). */
struct fleet_egress_stride_entry {
	struct fleet_egress_rule rule;
	enum fleet_stride_flags flags;
};

/* Value of egress_dst_v4_24 (key: the /24 network address, network order). */
struct fleet_egress_stride24 {
	struct fleet_egress_rule rule;
	enum fleet_stride_flags flags;
	__u64 hosts[4]; /* bit (n & 63) of hosts[n >> 6]: egress_dst_v4_32 has network + n */
};

/* egress_ports[port number]: the class of TCP and of UDP traffic to that port. */
struct fleet_egress_port_classes {
	__u32 tcp;
	__u32 udp;
	enum fleet_port_flags set; /* tcp, udp */
};

/* egress_mark_classes[mark], for marks below FLEET_EGRESS_MARKS_DIRECT. */
struct fleet_egress_mark_slot {
	__u32 class_id;
	__u32 set; /* 0: no class for this mark */
};

/* Value of egress_marks (key: __u32 mark >= FLEET_EGRESS_MARKS_DIRECT). */
struct fleet_egress_class_ref {
	__u32 class_id;
};

struct fleet_egress_config {
	__u32 default_class;
	__u32 pad;
	__u64 clock_ns; /* tests only: when not 0, the time the buckets see */
};

/* egress_buckets[class id]: the class's earliest departure time, shared by
 * all CPUs without a lock (read, then an atomic add, or a store when the class
 * was idle); one cache line per class. */
struct fleet_egress_bucket {
	__u64 next_ns; /* when the class's next byte may leave (0: idle since load) */
	__u64 pad[7];
};

#endif
