/* SPDX-License-Identifier: GPL-2.0 */
/* Test fixture: drops UDP to DROP_PORT (IPv4), counts drops, passes the rest down the chain.
 * VERSION changes the code (and the tag) without changing the maps: two builds that both drop. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "fleet/types.h"
#include "fleet/chain.h"
#include "drop_udp.h"

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
	__u32 k = (build_version ^ VERSION) & 1;

	if (fixture_udp_to_drop_port(data, end)) {
		struct fleet_counter *c = bpf_map_lookup_elem(&drops, &k);
		if (c) {
			c->packets++;
			c->bytes += end - data;
		}
		return XDP_DROP;
	}
	return fleet_xdp_next(ctx, XDP_PASS);
}
char _license[] SEC("license") = "GPL";
