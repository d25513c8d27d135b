/* SPDX-License-Identifier: GPL-2.0 */
/* Floor for xdp_lb benchmarks, and the peer program that lets veth deliver XDP_TX frames. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int lb_floor_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
