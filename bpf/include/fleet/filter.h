/* SPDX-License-Identifier: GPL-2.0 */
/* xdp_filter: the layouts of its maps, written once.
 *
 * User space (the bpf_map module, the tests, the benchmark) reads every
 * struct and enum below from the object's BTF; nothing here is copied into
 * Python by hand.
 *
 * Decision order for an IP packet (first match wins):
 *   1. malformed / truncated / too deep  -> config.malformed
 *   2. later fragment                    -> config.fragments
 *      IP options / IPv6 ext headers     -> config.ip_options
 *   3. source rule, the longest match: action pass (allow list), drop (deny
 *      list) or redirect. IPv4, config.v4_lookup "table" (the default): the
 *      stride table filter_v4 (one hash map, keys /16, /24 and /32, see
 *      plugins/module_utils/dataplane/xdp_filter_tables.py): the /16 entry,
 *      then the /24 and /32 entries its flags point to; usually one lookup,
 *      at most three; "lpm": the exact hash filter_src_v4, then the LPM trie
 *      filter_pfx_v4. IPv6: the exact hash filter_src_v6, then the LPM trie
 *      filter_pfx_v6.
 *   4. per-source token bucket (config.rate_*), when enabled -> drop
 *   5. destination port rule: filter_ports is an array indexed by the port
 *      number (host order), each entry holding a rule per protocol; ICMP and
 *      ICMPv6 rules sit at the index of the ICMP type
 *   6. config.default_verdict (default-allow or default-deny)
 * The management list always wins: whenever steps 2-6 give anything but
 * pass, a packet from a source in filter_mgmt_v4/v6 (and, unless
 * config.mgmt_match is "any", TCP to a port set in filter_mgmt_ports) passes
 * and is counted under reason "mgmt". (Checking it only then keeps it off the
 * allow path; management traffic does spend its source's tokens.)
 * A fleet_policy of "rules" means: no special treatment, carry on with the
 * rules (for malformed packets that cannot be matched: the default verdict).
 */
#ifndef FLEET_FILTER_H
#define FLEET_FILTER_H

#include "fleet/types.h"

#define FLEET_FILTER_RULES_MAX 4096 /* per-rule counters */
#define FLEET_FILTER_REDIRECT_MAX 64
#define FLEET_FILTER_INNER_MAX 262144  /* default size of a rule-set map */
#define FLEET_FILTER_BUCKETS_MAX 65536 /* tracked sources for rate limiting */

enum fleet_verdict {
	FLEET_VERDICT_PASS = 0,
	FLEET_VERDICT_DROP = 1,
	FLEET_VERDICT_REDIRECT = 2,
	FLEET_VERDICT_MAX = 3,
};

enum fleet_policy {
	FLEET_POLICY_RULES = 0,
	FLEET_POLICY_PASS = 1,
	FLEET_POLICY_DROP = 2,
};

enum fleet_proto {
	FLEET_PROTO_ICMP = 1,
	FLEET_PROTO_TCP = 6,
	FLEET_PROTO_UDP = 17,
	FLEET_PROTO_ICMPV6 = 58,
};

enum fleet_v4_lookup {
	FLEET_V4_LOOKUP_TABLE = 0, /* filter_v4 stride table */
	FLEET_V4_LOOKUP_LPM = 1,   /* filter_src_v4 exact hash + filter_pfx_v4 LPM trie */
};

/* A filter_v4 entry: "match": rule covers the whole block; "deeper": entries
 * for longer blocks exist below this one. On a /16 entry with "deeper",
 * "hosts": /32 entries exist below it, "blocks": /24 entries with a rule
 * exist below it; with only one of the two the lookup goes straight to that
 * level (an exact address: /16 then /32, two lookups instead of three), with
 * both (or neither: a table written without them) it walks /24 then /32. */
enum fleet_stride_flags {
	FLEET_STRIDE_MATCH = 1,
	FLEET_STRIDE_DEEPER = 2,
	FLEET_STRIDE_HOSTS = 4,
	FLEET_STRIDE_BLOCKS = 8,
};

/* Which packets from a management source always pass. */
enum fleet_mgmt_match {
	FLEET_MGMT_MATCH_PORTS = 0, /* TCP to a destination port set in filter_mgmt_ports (index: port number) */
	FLEET_MGMT_MATCH_ANY = 1,   /* everything from the source */
};

/* Why a packet got its verdict. filter_stats key: reason * FLEET_VERDICT_MAX + verdict. */
enum fleet_filter_reason {
	FLEET_FILTER_REASON_DEFAULT = 0,
	FLEET_FILTER_REASON_MGMT = 1,
	FLEET_FILTER_REASON_SOURCE = 2,
	FLEET_FILTER_REASON_PORT = 3,
	FLEET_FILTER_REASON_RATE_LIMITED = 4,
	FLEET_FILTER_REASON_FRAGMENT = 5,
	FLEET_FILTER_REASON_IP_OPTIONS = 6,
	FLEET_FILTER_REASON_MALFORMED = 7,
	FLEET_FILTER_REASON_TRUNCATED = 8,
	FLEET_FILTER_REASON_TOO_DEEP = 9,
	FLEET_FILTER_REASON_NON_IP = 10,
	FLEET_FILTER_REASON_MAX = 11,
};

/* filter_config[0] */
struct fleet_filter_config {
	enum fleet_verdict default_verdict;
	enum fleet_verdict non_ip;	  /* ARP and friends: pass unless told */
	enum fleet_policy fragments;	  /* later fragments (no L4 header) */
	enum fleet_policy ip_options;	  /* IPv4 options, IPv6 extension headers */
	enum fleet_policy malformed;	  /* truncated, impossible fields, too many tags/headers */
	__u32 redirect_slot;		  /* filter_redirect key for the "redirect" default */
	enum fleet_mgmt_match mgmt_match; /* ports: TCP to a port of filter_mgmt_ports; any: all traffic */
	enum fleet_v4_lookup v4_lookup;
	__u64 rate_pps; /* per source; 0: no packet limit */
	__u64 burst_packets;
	__u64 rate_bps; /* bytes per second; 0: no byte limit */
	__u64 burst_bytes;
	__u64 clock_ns; /* tests only: when not 0, the time the buckets see */
};

/* A rule: the value of the source maps, part of the stride and port entries. */
struct fleet_filter_rule {
	enum fleet_verdict action;
	__u32 rule_id;	     /* index of filter_rule_stats */
	__u32 redirect_slot; /* filter_redirect key when action is redirect */
	__u32 mark;	     /* not 0: handed to TC as skb->mark (fleet/meta.h) when the packet passes */
};

/* Value of filter_v4 (key: struct fleet_lpm_v4 with prefixlen 16, 24 or 32). */
struct fleet_stride_entry {
	struct fleet_filter_rule rule;
	enum fleet_stride_flags flags;
};

/* Key of port-keyed hash maps (tc_egress). */
struct fleet_port_key {
	enum fleet_proto proto;
	fleet_port_t port;
	__u16 pad;
};

/* Which rules of a filter_ports entry are set. */
enum fleet_port_flags {
	FLEET_PORT_TCP = 1,
	FLEET_PORT_UDP = 2,
	FLEET_PORT_ICMP = 4,   /* index: ICMP type */
	FLEET_PORT_ICMPV6 = 8, /* index: ICMPv6 type */
};

/* filter_ports[port] (an array: one lookup without hashing). */
struct fleet_port_rules {
	struct fleet_filter_rule tcp;
	struct fleet_filter_rule udp;
	struct fleet_filter_rule icmp;
	struct fleet_filter_rule icmpv6;
	enum fleet_port_flags set;
};

/* Per-source token bucket (filter_buckets, LRU). Tokens are whole packets or
 * bytes; *_ns is the time up to which refill has been credited. */
struct fleet_bucket {
	__u64 pkt_ns;
	__u64 pkt_tokens;
	__u64 byte_ns;
	__u64 byte_tokens;
};

struct fleet_bucket_key {
	fleet_ipv6_t addr; /* IPv4 as ::ffff:a.b.c.d */
};

#endif
