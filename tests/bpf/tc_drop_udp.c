/* SPDX-License-Identifier: GPL-2.0 */
/* Test fixture: a TC program that drops UDP to DROP_PORT (IPv4), counts, passes the rest down the chain. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "fleet/types.h"
#include "fleet/chain.h"
#include "drop_udp.h"

#ifndef VERSION
#define VERSION 1
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fleet_counter);
} tc_drops SEC(".maps");

/* VERSION changes the code (and the tag), not the maps: k is always 0. */
volatile const __u32 build_version = VERSION;

SEC("tc")
int tc_drop_udp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	__u32 k = build_version - VERSION;

	if (fixture_udp_to_drop_port(data, end)) {
		struct fleet_counter *c = bpf_map_lookup_elem(&tc_drops, &k);
		if (c) {
			c->packets++;
			c->bytes += end - data;
		}
		return TC_ACT_SHOT;
	}
	return fleet_tc_next(skb, TC_ACT_OK);
}
char _license[] SEC("license") = "GPL";
