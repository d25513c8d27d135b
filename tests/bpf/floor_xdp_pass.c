/* SPDX-License-Identifier: GPL-2.0 */
/* Benchmark floor: returns XDP_PASS and does nothing else. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int floor_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
