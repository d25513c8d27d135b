/* SPDX-License-Identifier: GPL-2.0 */
/* Test fixture: counts packets per chain slot and continues the chain. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "fleet/types.h"
#include "fleet/chain.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct fleet_counter);
} hits SEC(".maps");

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	__u32 k = fleet_chain_slot;
	struct fleet_counter *c = bpf_map_lookup_elem(&hits, &k);
	if (c) {
		c->packets++;
		c->bytes += ctx->data_end - ctx->data;
	}
	return fleet_xdp_next(ctx, XDP_PASS);
}
FLEET_XDP_RUN_CONFIG(xdp_count, 10);
char _license[] SEC("license") = "GPL";
