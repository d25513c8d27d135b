/* SPDX-License-Identifier: GPL-2.0 */
/* tc_egress: egress ACL, DSCP marking, per-class rate limits and pacing.
 * See fleet/egress.h for the classification order and the map layouts. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "fleet/types.h"
#include "fleet/parsing.h"
#include "fleet/chain.h"
#include "fleet/csum.h"
#include "fleet/egress.h"
#include "fleet/ratelimit.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fleet_egress_config);
} egress_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLEET_EGRESS_CLASSES);
	__type(key, __u32);
	__type(value, struct fleet_egress_class);
} egress_classes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLEET_EGRESS_CLASSES);
	__type(key, __u32);
	__type(value, struct fleet_egress_bucket);
} egress_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct fleet_egress_stride_entry);
} egress_dst_v4_16 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLEET_EGRESS_RULES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __be32);
	__type(value, struct fleet_egress_stride24);
} egress_dst_v4_24 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLEET_EGRESS_RULES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __be32);
	__type(value, struct fleet_egress_rule);
} egress_dst_v4_32 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, FLEET_EGRESS_RULES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fleet_lpm_v6);
	__type(value, struct fleet_egress_rule);
} egress_dst_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct fleet_egress_port_classes);
} egress_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLEET_EGRESS_MARKS_DIRECT);
	__type(key, __u32);
	__type(value, struct fleet_egress_mark_slot);
} egress_mark_classes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct fleet_egress_class_ref);
} egress_marks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLEET_EGRESS_CLASSES *FLEET_EGRESS_OUTCOMES);
	__type(key, __u32);
	__type(value, struct fleet_counter);
} egress_stats SEC(".maps");

/* Keeps enum fleet_egress_outcome in the object's BTF for user space. */
volatile const enum fleet_egress_outcome fleet_egress_outcome_btf;
volatile const enum fleet_stride_flags fleet_egress_stride_flags_btf;
volatile const enum fleet_port_flags fleet_egress_port_flags_btf;
/* egress_stats' key as user space reads it (see fleet_key_filter_stats in xdp_filter.c):
 * class_id * FLEET_EGRESS_OUTCOMES + outcome */
struct fleet_key_egress_stats {
	__u32 class_id;
	enum fleet_egress_outcome outcome;
};
volatile const struct fleet_key_egress_stats fleet_key_egress_stats_btf;

/* The stride table (see xdp_filter_tables.py): the /16 level is an array (an
 * inlined load, no hashing), the /24 level a hash read only when the /16
 * entry says deeper, the /32 level a hash read only when the /24 entry's
 * bitmap has the address. Returns whether a rule was found. */
static __always_inline int fleet_egress_dst_v4(__be32 addr, struct fleet_egress_rule *out)
{
	__u32 host = bpf_ntohl(addr), index = host >> 16;
	struct fleet_egress_stride_entry *e16;
	struct fleet_egress_stride24 *e24;
	struct fleet_egress_rule *e32;
	__be32 key;
	int found = 0;

	e16 = bpf_map_lookup_elem(&egress_dst_v4_16, &index);
	if (!e16)
		return 0;
	if (e16->flags & FLEET_STRIDE_MATCH) {
		*out = e16->rule;
		found = 1;
	}
	if (!(e16->flags & FLEET_STRIDE_DEEPER))
		return found;
	key = addr & bpf_htonl(0xffffff00);
	e24 = bpf_map_lookup_elem(&egress_dst_v4_24, &key);
	if (!e24)
		return found;
	if (e24->flags & FLEET_STRIDE_MATCH) {
		*out = e24->rule;
		found = 1;
	}
	host &= 0xff;
	if (!((e24->hosts[host >> 6] >> (host & 63)) & 1))
		return found;
	e32 = bpf_map_lookup_elem(&egress_dst_v4_32, &addr);
	if (e32) {
		*out = *e32;
		found = 1;
	}
	return found;
}

static __always_inline __u32 fleet_egress_classify(struct __sk_buff *skb, const struct fleet_egress_config *cfg,
						   const struct fleet_pkt *pkt)
{
	struct fleet_egress_rule found = {}, *rule = 0;
	__u32 mark = skb->mark;

	if (mark && mark < FLEET_EGRESS_MARKS_DIRECT) {
		struct fleet_egress_mark_slot *slot = bpf_map_lookup_elem(&egress_mark_classes, &mark);

		if (slot && slot->set)
			return slot->class_id;
	} else if (mark) {
		struct fleet_egress_class_ref *ref = bpf_map_lookup_elem(&egress_marks, &mark);

		if (ref)
			return ref->class_id;
	}
	if (pkt->l3_proto == ETH_P_IP) {
		if (fleet_egress_dst_v4(pkt->daddr.v4, &found))
			rule = &found;
	} else if (pkt->l3_proto == ETH_P_IPV6) {
		struct fleet_lpm_v6 k = { .prefixlen = 128 };
		struct fleet_egress_rule *r6;

		__builtin_memcpy(k.addr.addr, pkt->daddr.v6, 16);
		r6 = bpf_map_lookup_elem(&egress_dst_v6, &k);
		if (r6) {
			found = *r6;
			rule = &found;
		}
	} else {
		return cfg->default_class;
	}
	if (rule && (!rule->proto || rule->proto == pkt->l4_proto) && (!rule->port || rule->port == pkt->dport))
		return rule->class_id;
	if ((pkt->l4_proto == IPPROTO_TCP || pkt->l4_proto == IPPROTO_UDP) && pkt->frag != FLEET_FRAG_LATER) {
		__u32 index = bpf_ntohs(pkt->dport);
		struct fleet_egress_port_classes *pc = bpf_map_lookup_elem(&egress_ports, &index);

		if (pc && pkt->l4_proto == IPPROTO_TCP && (pc->set & FLEET_PORT_TCP))
			return pc->tcp;
		if (pc && pkt->l4_proto == IPPROTO_UDP && (pc->set & FLEET_PORT_UDP))
			return pc->udp;
	}
	return cfg->default_class;
}

/* Write the DSCP, keep ECN; IPv4 header checksum updated incrementally. */
static __always_inline void fleet_set_dscp(void *data, void *end, const struct fleet_pkt *pkt, __u8 dscp)
{
	__u8 *b = data + (pkt->l3_off & 0xff); /* bounded: at most Ethernet + 2 tags */

	if ((void *)(b + sizeof(struct iphdr)) > end)
		return;
	if (pkt->l3_proto == ETH_P_IP) {
		struct iphdr *iph = (void *)b;
		__u16 old = *(__u16 *)b, new;
		__u8 tos = (dscp << 2) | (iph->tos & 3);

		if (tos == iph->tos)
			return;
		iph->tos = tos;
		new = *(__u16 *)b;
		fleet_csum_replace2(&iph->check, old, new);
	} else if (pkt->l3_proto == ETH_P_IPV6) {
		__u16 word = ((__u16)b[0] << 8) | b[1];

		word = (word & ~0x0fc0) | ((__u16)(dscp & 0x3f) << 6);
		b[0] = word >> 8;
		b[1] = word & 0xff;
	}
}

static __always_inline void fleet_egress_count(__u32 class_id, __u32 outcome, __u64 bytes)
{
	__u32 key = (class_id & (FLEET_EGRESS_CLASSES - 1)) * FLEET_EGRESS_OUTCOMES + outcome;
	struct fleet_counter *c = bpf_map_lookup_elem(&egress_stats, &key);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* ns that `bytes` take at a rate given as 32.32 fixed-point ns per byte;
 * exact below 2^32 bytes, no overflow for any rate >= 1 byte/s. */
static __always_inline __u64 fleet_egress_ns(__u64 bytes, __u64 ns_per_byte)
{
	return bytes * (ns_per_byte >> 32) + ((bytes * (ns_per_byte & 0xffffffff)) >> 32);
}

/* Recompute a class's derived fields (the same arithmetic as
 * tc_egress_tables.class_value()); runs once after a writer changed rate_bps or
 * burst_bytes without them. */
static __attribute__((noinline)) int fleet_egress_derive(struct fleet_egress_class *cls)
{
	__u64 rate = cls->rate_bps, burst = cls->burst_bytes;

	if (!rate)
		return 0;
	cls->ns_per_byte = (FLEET_NSEC << 32) / rate;
	cls->burst_ns = fleet_egress_ns(burst < 0xffffffffULL ? burst : 0xffffffffULL, cls->ns_per_byte);
	cls->derived_rate_bps = rate;
	cls->derived_burst_bytes = burst;
	return 0;
}

/* The class's rate limit, without a lock: one earliest departure time per
 * class (next_ns). A packet of `bytes` leaves at max(now, next_ns) and moves
 * next_ns by its cost at the class rate.
 *  - limit drop: a packet passes when it would leave no later than burst_ns
 *    after now, counting its own cost (max(now, next_ns) + cost - now <=
 *    burst_ns), which is a token bucket of burst_bytes refilled at the rate,
 *    without rounding; otherwise it is dropped and next_ns stays.
 *  - limit pace: a packet whose departure is later than now gets it in
 *    skb->tstamp (the fq qdisc holds it until then), or is dropped when that
 *    is more than horizon_ns ahead.
 * A busy class (next_ns ahead of now) moves next_ns with an atomic add; an
 * idle one restarts it at now + cost with a store. CPUs racing through that
 * restart can each count from now, so at the moment a class turns busy it
 * may let out up to one extra packet per CPU; never fewer than the rate. */
static __always_inline __u32 fleet_egress_limit(const struct fleet_egress_config *cfg, struct fleet_egress_class *cls,
						__u32 class_id, __u64 bytes, __u64 *departure)
{
	struct fleet_egress_bucket *b;
	__u64 now, next, cost, ahead;

	if (cls->derived_rate_bps != cls->rate_bps || cls->derived_burst_bytes != cls->burst_bytes)
		fleet_egress_derive(cls);
	b = bpf_map_lookup_elem(&egress_buckets, &class_id);
	if (!b)
		return FLEET_EGRESS_PASS;
	now = cfg->clock_ns ? cfg->clock_ns : bpf_ktime_get_ns();
	cost = fleet_egress_ns(bytes, cls->ns_per_byte);
	next = *(volatile __u64 *)&b->next_ns;
	ahead = next > now ? next - now : 0;
	if (cls->limit == FLEET_EGRESS_LIMIT_DROP) {
		if (ahead + cost > cls->burst_ns)
			return FLEET_EGRESS_RATE_LIMITED;
	} else if (ahead > cls->horizon_ns) {
		return FLEET_EGRESS_OVER_HORIZON;
	}
	if (ahead)
		__sync_fetch_and_add(&b->next_ns, cost);
	else
		*(volatile __u64 *)&b->next_ns = now + cost;
	if (cls->limit == FLEET_EGRESS_LIMIT_PACE && ahead) {
		*departure = next;
		return FLEET_EGRESS_PACED;
	}
	return FLEET_EGRESS_PASS;
}

SEC("tc")
int tc_egress(struct __sk_buff *skb)
{
	struct fleet_egress_config *cfg;
	struct fleet_egress_class *cls;
	struct fleet_pkt pkt = {};
	__u32 zero = 0, class_id, outcome = FLEET_EGRESS_PASS;
	__u64 bytes = skb->len, departure = 0;
	void *data, *end;

	cfg = bpf_map_lookup_elem(&egress_config, &zero);
	if (!cfg)
		return fleet_tc_next(skb, TC_ACT_OK);
	/* headers in the linear part (GSO/paged skbs from the stack) */
	if (skb->data_end - skb->data < 128 && skb->len > skb->data_end - skb->data)
		bpf_skb_pull_data(skb, skb->len < 128 ? skb->len : 128);
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;

	if (fleet_parse_packet(data, end, &pkt) < 0)
		pkt.l3_proto = 0; /* unparsed: default class, no rewrite */
	class_id = fleet_egress_classify(skb, cfg, &pkt) & (FLEET_EGRESS_CLASSES - 1);
	cls = bpf_map_lookup_elem(&egress_classes, &class_id);
	if (!cls)
		return fleet_tc_next(skb, TC_ACT_OK);
	if (cls->action == FLEET_VERDICT_DROP) {
		fleet_egress_count(class_id, FLEET_EGRESS_DROP, bytes);
		return fleet_tc_next(skb, TC_ACT_SHOT);
	}
	if (cls->limit != FLEET_EGRESS_LIMIT_NONE && cls->rate_bps) {
		outcome = fleet_egress_limit(cfg, cls, class_id, bytes, &departure);
		if (outcome == FLEET_EGRESS_RATE_LIMITED || outcome == FLEET_EGRESS_OVER_HORIZON) {
			fleet_egress_count(class_id, outcome, bytes);
			return fleet_tc_next(skb, TC_ACT_SHOT);
		}
		if (outcome == FLEET_EGRESS_PACED)
			skb->tstamp = departure;
	}
	if (cls->priority)
		skb->priority = cls->priority;
	if (cls->set_dscp && pkt.l3_proto)
		fleet_set_dscp(data, end, &pkt, cls->dscp);
	fleet_egress_count(class_id, outcome, bytes);
	return fleet_tc_next(skb, TC_ACT_OK);
}

char _license[] SEC("license") = "GPL";
