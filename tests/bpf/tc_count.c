/* SPDX-License-Identifier: GPL-2.0 */
/* Test fixture: a TC program that counts packets per chain slot and continues the chain. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "fleet/types.h"
#include "fleet/chain.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct fleet_counter);
} tc_hits SEC(".maps");

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	__u32 k = fleet_chain_slot;
	struct fleet_counter *c = bpf_map_lookup_elem(&tc_hits, &k);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	return fleet_tc_next(skb, TC_ACT_OK);
}
char _license[] SEC("license") = "GPL";
