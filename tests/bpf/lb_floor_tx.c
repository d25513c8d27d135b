/* SPDX-License-Identifier: GPL-2.0 */
/* Floor for xdp_lb benchmarks of forwarded packets: transmit unchanged. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int lb_floor_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}
char _license[] SEC("license") = "GPL";
