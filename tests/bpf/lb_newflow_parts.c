/* SPDX-License-Identifier: GPL-2.0 */
/* The parts of xdp_lb's new-flow path, each alone, for tests/bench/bench_dataplane_lb.py: where a new flow's
 * time goes. Reads an untagged IPv4 TCP/UDP frame's 5-tuple at fixed offsets, then, by LB_PART:
 *   1  connection-table lookup (a miss for a new flow), then the insert xdp_lb makes (BPF_ANY)
 *   2  the flow hash and the read of the flow's slot in one Maglev ring row (FLEET_LB_DEFAULT_RING_SIZE slots)
 * The table has xdp_lb's key, value and flags (LB_CT_FLAGS: BPF_F_NO_COMMON_LRU as shipped, 0 to compare
 * with the common LRU list); returns XDP_TX, so it is timed against the XDP_TX floor. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include "fleet/lb.h"
#include "fleet/hash.h"

#ifndef LB_PART
#define LB_PART 1
#endif
#ifndef LB_CT_FLAGS
#define LB_CT_FLAGS BPF_F_NO_COMMON_LRU
#endif

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, LB_CT_FLAGS);
	__uint(max_entries, FLEET_LB_CONNTRACK_PER_CPU);
	__type(key, struct fleet_lb_flow4);
	__type(value, struct fleet_lb_conn);
} parts_conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLEET_LB_DEFAULT_RING_SIZE);
	__type(key, __u32);
	__type(value, __u32);
} parts_ring SEC(".maps");

SEC("xdp")
int lb_newflow_parts(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + sizeof(struct ethhdr);
	__be16 *ports = (void *)(iph + 1);
	struct fleet_lb_flow4 flow = {};

	if ((void *)(ports + 2) > end)
		return XDP_PASS;
	flow.src = iph->saddr;
	flow.dst = iph->daddr;
	flow.sport = ports[0];
	flow.dport = ports[1];
	flow.proto = iph->protocol;
#if LB_PART == 1
	if (!bpf_map_lookup_elem(&parts_conntrack, &flow)) {
		struct fleet_lb_conn fresh = { .backend = 1 };

		bpf_map_update_elem(&parts_conntrack, &flow, &fresh, BPF_ANY);
	}
#else
	{
		__u32 hash = fleet_flow_hash(&flow.src, &flow.dst, 1, (__u32)flow.sport | ((__u32)flow.dport << 16), flow.proto);
		__u32 idx = (__u32)(((__u64)hash * FLEET_LB_DEFAULT_RING_SIZE) >> 32);
		__u32 *id = bpf_map_lookup_elem(&parts_ring, &idx);

		if (!id || *id == FLEET_LB_BACKEND_NONE)
			return XDP_DROP;
	}
#endif
	return XDP_TX;
}
char _license[] SEC("license") = "GPL";
