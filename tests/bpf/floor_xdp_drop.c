/* SPDX-License-Identifier: GPL-2.0 */
/* Benchmark floor: returns XDP_DROP and does nothing else. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int floor_xdp_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}
char _license[] SEC("license") = "GPL";
