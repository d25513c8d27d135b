/* SPDX-License-Identifier: GPL-2.0 */
/* Test fixture: drops UDP to DROP_PORT (IPv4), counts drops, passes the rest down the chain.
 * VERSION changes the code (and the tag) without changing the maps: two builds that both drop. */
#include <linux/bpf.h>
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
#ifndef DROP_SLOTS
#define DROP_SLOTS 2
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_SLOTS);
	__type(key, __u32);
	__type(value, struct fleet_counter);
} drops SEC(".maps");

volatile const __u32 build_version = VERSION;

SEC("xdp")
int xdp_drop_udp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 k = (build_version ^ VERSION) & 1;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return fleet_xdp_next(ctx, XDP_PASS);
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return fleet_xdp_next(ctx, XDP_PASS);
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return fleet_xdp_next(ctx, XDP_PASS);
	if (udp->dest == bpf_htons(DROP_PORT)) {
		struct fleet_counter *c = bpf_map_lookup_elem(&drops, &k);
		if (c) { c->packets++; c->bytes += end - data; }
		return XDP_DROP;
	}
	return fleet_xdp_next(ctx, XDP_PASS);
}
char _license[] SEC("license") = "GPL";
