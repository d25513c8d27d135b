/* SPDX-License-Identifier: GPL-2.0 */
/* xdp_filter: source deny/allow lists, port rules, management list, per-source
 * rate limits and explicit policies for odd packets. See fleet/filter.h for
 * the decision order and the map layouts.
 *
 * Every rule set (exact sources v4/v6, prefixes v4/v6, port rules) is the only
 * inner map of a one-slot array of maps: user space fills a new inner map and
 * swaps it in with one update, so a packet sees the old set or the new one.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "fleet/types.h"
#include "fleet/parsing.h"
#include "fleet/chain.h"
#include "fleet/filter.h"
#include "fleet/meta.h"
#include "fleet/ratelimit.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fleet_filter_config);
} filter_config SEC(".maps");

/* Inner map templates and the initial (empty) rule sets. */
#define FLEET_INNER(name, maptype, ktype, vtype)             \
	struct name {                                        \
		__uint(type, maptype);                       \
		__uint(max_entries, FLEET_FILTER_INNER_MAX); \
		__uint(map_flags, BPF_F_NO_PREALLOC);        \
		__type(key, ktype);                          \
		__type(value, vtype);                        \
	}

FLEET_INNER(filter_v4_set, BPF_MAP_TYPE_HASH, struct fleet_lpm_v4, struct fleet_stride_entry) filter_v4_0 SEC(".maps");
FLEET_INNER(filter_src_v4_set, BPF_MAP_TYPE_HASH, fleet_ipv4_t, struct fleet_filter_rule) filter_src_v4_0 SEC(".maps");
FLEET_INNER(filter_src_v6_set, BPF_MAP_TYPE_HASH, fleet_ipv6_t, struct fleet_filter_rule) filter_src_v6_0 SEC(".maps");
FLEET_INNER(filter_pfx_v4_set, BPF_MAP_TYPE_LPM_TRIE, struct fleet_lpm_v4, struct fleet_filter_rule) filter_pfx_v4_0 SEC(".maps");
FLEET_INNER(filter_pfx_v6_set, BPF_MAP_TYPE_LPM_TRIE, struct fleet_lpm_v6, struct fleet_filter_rule) filter_pfx_v6_0 SEC(".maps");
struct filter_ports_set {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct fleet_port_rules);
} filter_ports_0 SEC(".maps");

#define FLEET_OUTER(name, inner)                          \
	struct {                                          \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS); \
		__uint(max_entries, 1);                   \
		__type(key, __u32);                       \
		__array(values, struct inner);            \
	} name SEC(".maps") = { .values = { [0] = &name##_0 } }

FLEET_OUTER(filter_v4, filter_v4_set);
FLEET_OUTER(filter_src_v4, filter_src_v4_set);
FLEET_OUTER(filter_src_v6, filter_src_v6_set);
FLEET_OUTER(filter_pfx_v4, filter_pfx_v4_set);
FLEET_OUTER(filter_pfx_v6, filter_pfx_v6_set);
FLEET_OUTER(filter_ports, filter_ports_set);

/* Management sources: a packet from here (to a mgmt port) always passes. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fleet_lpm_v4);
	__type(value, __u32);
} filter_mgmt_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fleet_lpm_v6);
	__type(value, __u32);
} filter_mgmt_v6 SEC(".maps");

/* Index: TCP destination port (host order); value not 0: a management port. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} filter_mgmt_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FLEET_FILTER_BUCKETS_MAX);
	__type(key, struct fleet_bucket_key);
	__type(value, struct fleet_bucket);
} filter_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, FLEET_FILTER_REDIRECT_MAX);
	__type(key, __u32);
	__type(value, __u32);
} filter_redirect SEC(".maps");

/* key: reason * FLEET_VERDICT_MAX + verdict; user space sums per verdict or per reason */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLEET_FILTER_REASON_MAX *FLEET_VERDICT_MAX);
	__type(key, __u32);
	__type(value, struct fleet_counter);
} filter_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLEET_FILTER_RULES_MAX);
	__type(key, __u32);
	__type(value, struct fleet_counter);
} filter_rule_stats SEC(".maps");

/* Array keys must be plain integers; these keep the enums that name the
 * counters' keys in the object's BTF, for user space. */
volatile const enum fleet_verdict fleet_filter_verdict_btf;
volatile const enum fleet_filter_reason fleet_filter_reason_btf;
volatile const enum fleet_stride_flags fleet_stride_flags_btf;
volatile const enum fleet_port_flags fleet_port_flags_btf;
/* filter_stats' key as user space reads it (a struct fleet_key_<map> of parts; each part after the first
 * is an enum whose end marker is its radix): reason * FLEET_VERDICT_MAX + verdict */
struct fleet_key_filter_stats {
	enum fleet_filter_reason reason;
	enum fleet_verdict verdict;
};
volatile const struct fleet_key_filter_stats fleet_key_filter_stats_btf;
/* The metadata a marked packet carries to TC (fleet/meta.h), for user space and tests. */
volatile const struct fleet_xdp_meta fleet_xdp_meta_btf;

static __always_inline void fleet_count(void *map, __u32 key, __u64 bytes)
{
	struct fleet_counter *c = bpf_map_lookup_elem(map, &key);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline struct fleet_filter_rule *fleet_inner_lookup(void *outer, void *key)
{
	__u32 zero = 0;
	void *inner = bpf_map_lookup_elem(outer, &zero);

	if (!inner)
		return 0;
	return bpf_map_lookup_elem(inner, key);
}

static __always_inline void *fleet_inner_lookup_any(void *outer, void *key)
{
	__u32 zero = 0;
	void *inner = bpf_map_lookup_elem(outer, &zero);

	if (!inner)
		return 0;
	return bpf_map_lookup_elem(inner, key);
}

static __always_inline int fleet_is_mgmt(const struct fleet_filter_config *cfg, const struct fleet_pkt *pkt)
{
	if (cfg->mgmt_match != FLEET_MGMT_MATCH_ANY) {
		__u32 port = bpf_ntohs(pkt->dport);
		__u32 *on;

		if (pkt->l4_proto != IPPROTO_TCP || pkt->frag == FLEET_FRAG_LATER)
			return 0;
		on = bpf_map_lookup_elem(&filter_mgmt_ports, &port);
		if (!on || !*on)
			return 0;
	}
	if (pkt->l3_proto == ETH_P_IP) {
		struct fleet_lpm_v4 k = { .prefixlen = 32, .addr = pkt->saddr.v4 };

		return bpf_map_lookup_elem(&filter_mgmt_v4, &k) != 0;
	} else {
		struct fleet_lpm_v6 k = { .prefixlen = 128 };

		__builtin_memcpy(k.addr.addr, pkt->saddr.v6, 16);
		return bpf_map_lookup_elem(&filter_mgmt_v6, &k) != 0;
	}
}

/* The stride table. Rules are copied out (the verifier refuses selects
 * between map pointers). */
static __always_inline void fleet_stride_copy(const struct fleet_stride_entry *e, struct fleet_filter_rule *out)
{
	out->action = e->rule.action;
	out->rule_id = e->rule.rule_id;
	out->redirect_slot = e->rule.redirect_slot;
	out->mark = e->rule.mark;
}

/* One step of the level walk: the last "match" on the way is the longest
 * prefix; returns whether "deeper" says there is more. */
static __always_inline int fleet_stride_step(void *table, struct fleet_lpm_v4 *k, struct fleet_filter_rule *best, int *found)
{
	struct fleet_stride_entry *e = bpf_map_lookup_elem(table, k);
	__u32 flags;

	if (!e)
		return 0;
	flags = e->flags;
	if (flags & FLEET_STRIDE_MATCH) {
		fleet_stride_copy(e, best);
		*found = 1;
	}
	return flags & FLEET_STRIDE_DEEPER;
}

/* One level's entry, when it holds a rule: the longest match (1). */
static __always_inline int fleet_stride_match(void *table, struct fleet_lpm_v4 *k, struct fleet_filter_rule *out)
{
	struct fleet_stride_entry *e = bpf_map_lookup_elem(table, k);

	if (!e || !(e->flags & FLEET_STRIDE_MATCH))
		return 0;
	fleet_stride_copy(e, out);
	return 1;
}

/* The /16 entry; below it, when its flags say only /32 entries ("hosts") or
 * only /24 entries with a rule ("blocks") exist there, that one level;
 * otherwise the /24 entry, then the /32 entry, while "deeper" says there is
 * more. The longest match wins: the /32 entry, else the /24's rule, else the
 * /16's. */
static __always_inline int fleet_stride_v4(__be32 addr, struct fleet_filter_rule *out)
{
	struct fleet_lpm_v4 k = { .prefixlen = 16, .addr = addr & bpf_htonl(0xffff0000) };
	struct fleet_stride_entry *e;
	__u32 zero = 0, flags, below;
	int found = 0;
	void *table;

	table = bpf_map_lookup_elem(&filter_v4, &zero);
	if (!table)
		return 0;
	e = bpf_map_lookup_elem(table, &k);
	if (!e)
		return 0;
	flags = e->flags;
	if (flags & FLEET_STRIDE_MATCH) {
		fleet_stride_copy(e, out);
		found = 1;
	}
	if (!(flags & FLEET_STRIDE_DEEPER))
		return found;
	below = flags & (FLEET_STRIDE_HOSTS | FLEET_STRIDE_BLOCKS);
	if (below == FLEET_STRIDE_HOSTS) {
		k.prefixlen = 32;
		k.addr = addr;
		return fleet_stride_match(table, &k, out) || found;
	}
	if (below == FLEET_STRIDE_BLOCKS) {
		k.prefixlen = 24;
		k.addr = addr & bpf_htonl(0xffffff00);
		return fleet_stride_match(table, &k, out) || found;
	}
	k.prefixlen = 24;
	k.addr = addr & bpf_htonl(0xffffff00);
	if (!fleet_stride_step(table, &k, out, &found))
		return found;
	k.prefixlen = 32;
	k.addr = addr;
	fleet_stride_step(table, &k, out, &found);
	return found;
}

static __always_inline int fleet_copy_rule(struct fleet_filter_rule *r, struct fleet_filter_rule *out)
{
	if (!r)
		return 0;
	*out = *r;
	return 1;
}

static __always_inline int fleet_source_rule(const struct fleet_filter_config *cfg, const struct fleet_pkt *pkt,
					     struct fleet_filter_rule *out)
{
	struct fleet_filter_rule *r;

	if (pkt->l3_proto == ETH_P_IP) {
		struct fleet_lpm_v4 k = { .prefixlen = 32, .addr = pkt->saddr.v4 };

		if (cfg->v4_lookup == FLEET_V4_LOOKUP_TABLE)
			return fleet_stride_v4(pkt->saddr.v4, out);
		r = fleet_inner_lookup(&filter_src_v4, &k.addr);
		if (!r)
			r = fleet_inner_lookup(&filter_pfx_v4, &k);
	} else {
		struct fleet_lpm_v6 k = { .prefixlen = 128 };

		__builtin_memcpy(k.addr.addr, pkt->saddr.v6, 16);
		r = fleet_inner_lookup(&filter_src_v6, &k.addr);
		if (!r)
			r = fleet_inner_lookup(&filter_pfx_v6, &k);
	}
	return fleet_copy_rule(r, out);
}

static __always_inline int fleet_port_rule(const struct fleet_pkt *pkt, struct fleet_filter_rule *out)
{
	struct fleet_port_rules *e;
	__u32 index;

	if (pkt->l4_proto == IPPROTO_ICMP || pkt->l4_proto == IPPROTO_ICMPV6)
		index = pkt->icmp_type;
	else
		index = bpf_ntohs(pkt->dport);
	e = fleet_inner_lookup_any(&filter_ports, &index);
	if (!e || !e->set)
		return 0;
	switch (pkt->l4_proto) {
	case IPPROTO_TCP:
		return (e->set & FLEET_PORT_TCP) && fleet_copy_rule(&e->tcp, out);
	case IPPROTO_UDP:
		return (e->set & FLEET_PORT_UDP) && fleet_copy_rule(&e->udp, out);
	case IPPROTO_ICMP:
		return (e->set & FLEET_PORT_ICMP) && fleet_copy_rule(&e->icmp, out);
	case IPPROTO_ICMPV6:
		return (e->set & FLEET_PORT_ICMPV6) && fleet_copy_rule(&e->icmpv6, out);
	}
	return 0;
}

/* 1 when the source is over its rate; consumes a token otherwise. */
static __always_inline int fleet_rate_limited(const struct fleet_filter_config *cfg, const struct fleet_pkt *pkt, __u64 bytes)
{
	struct fleet_bucket_key key = {};
	struct fleet_bucket *b;
	__u64 now = cfg->clock_ns ? cfg->clock_ns : bpf_ktime_get_ns();

	if (pkt->l3_proto == ETH_P_IP) {
		key.addr.addr[10] = 0xff;
		key.addr.addr[11] = 0xff;
		__builtin_memcpy(&key.addr.addr[12], &pkt->saddr.v4, 4);
	} else {
		__builtin_memcpy(key.addr.addr, pkt->saddr.v6, 16);
	}
	b = bpf_map_lookup_elem(&filter_buckets, &key);
	if (!b) {
		struct fleet_bucket fresh = {
			.pkt_ns = now,
			.pkt_tokens = cfg->burst_packets,
			.byte_ns = now,
			.byte_tokens = cfg->burst_bytes,
		};

		bpf_map_update_elem(&filter_buckets, &key, &fresh, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&filter_buckets, &key);
		if (!b)
			return 0;
	}
	if (cfg->rate_pps)
		fleet_bucket_refill(&b->pkt_tokens, &b->pkt_ns, now, cfg->rate_pps, cfg->burst_packets);
	if (cfg->rate_bps)
		fleet_bucket_refill(&b->byte_tokens, &b->byte_ns, now, cfg->rate_bps, cfg->burst_bytes);
	if ((cfg->rate_pps && b->pkt_tokens < 1) || (cfg->rate_bps && b->byte_tokens < bytes))
		return 1;
	if (cfg->rate_pps)
		b->pkt_tokens -= 1;
	if (cfg->rate_bps)
		b->byte_tokens -= bytes;
	return 0;
}

static __always_inline enum fleet_verdict fleet_apply_policy(enum fleet_policy p, enum fleet_verdict dflt)
{
	if (p == FLEET_POLICY_PASS)
		return FLEET_VERDICT_PASS;
	if (p == FLEET_POLICY_DROP)
		return FLEET_VERDICT_DROP;
	return dflt;
}

/* A rule's mark, handed to TC ingress in the XDP metadata (see fleet/meta.h).
 * A driver without metadata refuses the adjustment: the packet goes on
 * unmarked. */
static __always_inline void fleet_xdp_mark(struct xdp_md *ctx, __u32 mark)
{
	struct fleet_xdp_meta *meta;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*meta)))
		return;
	meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 1) > (void *)(long)ctx->data)
		return;
	meta->mark = mark;
	meta->magic = FLEET_XDP_META_MAGIC;
}

SEC("xdp")
int xdp_filter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 bytes = end - data;
	__u32 zero = 0, reason, redirect_slot;
	struct fleet_filter_config *cfg;
	struct fleet_filter_rule rule = {};
	struct fleet_pkt pkt = {};
	enum fleet_verdict verdict;
	int rc;

	cfg = bpf_map_lookup_elem(&filter_config, &zero);
	if (!cfg)
		return fleet_xdp_next(ctx, XDP_PASS);
	redirect_slot = cfg->redirect_slot;

	rc = fleet_parse_packet(data, end, &pkt);
	if (rc == 0 && (pkt.l3_proto == ETH_P_IP || pkt.l3_proto == ETH_P_IPV6) && (__u64)pkt.l3_off + pkt.l3_len > bytes)
		rc = FLEET_PARSE_TRUNCATED; /* the IP length runs past the frame */
	if (rc < 0) {
		reason = rc == FLEET_PARSE_TRUNCATED  ? FLEET_FILTER_REASON_TRUNCATED
			 : rc == FLEET_PARSE_TOO_DEEP ? FLEET_FILTER_REASON_TOO_DEEP
						      : FLEET_FILTER_REASON_MALFORMED;
		verdict = fleet_apply_policy(cfg->malformed, cfg->default_verdict);
		goto out;
	}
	if (pkt.l3_proto != ETH_P_IP && pkt.l3_proto != ETH_P_IPV6) {
		reason = FLEET_FILTER_REASON_NON_IP;
		verdict = cfg->non_ip;
		goto out;
	}
	if (pkt.frag == FLEET_FRAG_LATER && cfg->fragments != FLEET_POLICY_RULES) {
		reason = FLEET_FILTER_REASON_FRAGMENT;
		verdict = fleet_apply_policy(cfg->fragments, cfg->default_verdict);
		goto ip_out;
	}
	if (pkt.ip_options && cfg->ip_options != FLEET_POLICY_RULES) {
		reason = FLEET_FILTER_REASON_IP_OPTIONS;
		verdict = fleet_apply_policy(cfg->ip_options, cfg->default_verdict);
		goto ip_out;
	}
	if (fleet_source_rule(cfg, &pkt, &rule)) {
		reason = FLEET_FILTER_REASON_SOURCE;
		goto rule_out;
	}
	if ((cfg->rate_pps || cfg->rate_bps) && fleet_rate_limited(cfg, &pkt, bytes)) {
		reason = FLEET_FILTER_REASON_RATE_LIMITED;
		verdict = FLEET_VERDICT_DROP;
		goto ip_out;
	}
	if (pkt.frag != FLEET_FRAG_LATER && fleet_port_rule(&pkt, &rule)) {
		reason = FLEET_FILTER_REASON_PORT;
		goto rule_out;
	}
	reason = FLEET_FILTER_REASON_DEFAULT;
	verdict = cfg->default_verdict;
	goto ip_out;

rule_out:
	verdict = rule.action;
	redirect_slot = rule.redirect_slot;
	if (verdict != FLEET_VERDICT_PASS && fleet_is_mgmt(cfg, &pkt)) {
		reason = FLEET_FILTER_REASON_MGMT;
		verdict = FLEET_VERDICT_PASS;
		goto out;
	}
	fleet_count(&filter_rule_stats, rule.rule_id & (FLEET_FILTER_RULES_MAX - 1), bytes);
	if (rule.mark && verdict != FLEET_VERDICT_DROP)
		fleet_xdp_mark(ctx, rule.mark);
	goto out;
ip_out:
	/* The management list wins over every verdict but pass; it is only
	 * consulted then, which keeps it off the allow path. */
	if (verdict != FLEET_VERDICT_PASS && fleet_is_mgmt(cfg, &pkt)) {
		reason = FLEET_FILTER_REASON_MGMT;
		verdict = FLEET_VERDICT_PASS;
	}
out:
	fleet_count(&filter_stats, reason * FLEET_VERDICT_MAX + verdict, bytes);
	if (verdict == FLEET_VERDICT_DROP)
		return fleet_xdp_next(ctx, XDP_DROP);
	if (verdict == FLEET_VERDICT_REDIRECT) /* an empty slot falls back to pass (and the chain) */
		return fleet_xdp_next(ctx, bpf_redirect_map(&filter_redirect, redirect_slot, XDP_PASS));
	return fleet_xdp_next(ctx, XDP_PASS);
}

FLEET_XDP_RUN_CONFIG(xdp_filter, 20);
char _license[] SEC("license") = "GPL";
