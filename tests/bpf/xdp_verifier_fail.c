/* SPDX-License-Identifier: GPL-2.0 */
/* Test fixture: reads the packet without a bounds check, which the verifier rejects. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "fleet/chain.h"

SEC("xdp")
int xdp_bad_read(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;

	if (data[12] == 0x08)
		return XDP_DROP;
	return fleet_xdp_next(ctx, XDP_PASS);
}
char _license[] SEC("license") = "GPL";
