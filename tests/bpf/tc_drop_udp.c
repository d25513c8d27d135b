/* SPDX-License-Identifier: GPL-2.0 */
/* Test fixture: a TC program that drops UDP to DROP_PORT (IPv4), counts, passes the rest down the chain. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "fleet/types.h"
#include "fleet/chain.h"

#ifndef DROP_PORT
#define DROP_PORT 9999
#endif
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
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 k = build_version - VERSION;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return fleet_tc_next(skb, TC_ACT_OK);
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return fleet_tc_next(skb, TC_ACT_OK);
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return fleet_tc_next(skb, TC_ACT_OK);
	if (udp->dest == bpf_htons(DROP_PORT)) {
		struct fleet_counter *c = bpf_map_lookup_elem(&tc_drops, &k);
		if (c) { c->packets++; c->bytes += end - data; }
		return TC_ACT_SHOT;
	}
	return fleet_tc_next(skb, TC_ACT_OK);
}
char _license[] SEC("license") = "GPL";
