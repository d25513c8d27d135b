/* SPDX-License-Identifier: GPL-2.0 */
/* tc_ingress_mark: the TC half of the XDP -> TC handoff. On an interface's
 * ingress hook, turns the mark xdp_filter left in the XDP metadata into
 * skb->mark, which tc_egress classifies by when the packet (or the reply to
 * it, when the mark is carried on by conntrack or the socket) leaves.
 * See fleet/meta.h. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "fleet/types.h"
#include "fleet/chain.h"
#include "fleet/meta.h"

/* packets seen with a mark from XDP, and without */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLEET_MARK_OUTCOMES);
	__type(key, __u32);
	__type(value, struct fleet_counter);
} tc_mark_stats SEC(".maps");

/* Keeps the enum that names tc_mark_stats' keys in the object's BTF. */
volatile const enum fleet_mark_outcome fleet_mark_outcome_btf;
struct fleet_key_tc_mark_stats {
	enum fleet_mark_outcome outcome;
};
volatile const struct fleet_key_tc_mark_stats fleet_key_tc_mark_stats_btf;

SEC("tc")
int tc_ingress_mark(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	struct fleet_xdp_meta *meta = (void *)(long)skb->data_meta;
	__u32 outcome = FLEET_MARK_NONE;
	struct fleet_counter *c;

	if ((void *)(meta + 1) <= data && meta->magic == FLEET_XDP_META_MAGIC && meta->mark) {
		skb->mark = meta->mark;
		outcome = FLEET_MARK_SET;
	}
	c = bpf_map_lookup_elem(&tc_mark_stats, &outcome);
	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	return fleet_tc_next(skb, TC_ACT_OK);
}

char _license[] SEC("license") = "GPL";
