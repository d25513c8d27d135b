/* SPDX-License-Identifier: GPL-2.0 */
/* Returns XDP_TX: the benchmark floor for transmit, and the traffic generator
 * for live-frame runs (BPF_F_TEST_XDP_LIVE_FRAMES sends each frame out of the
 * interface given as ingress_ifindex, to its veth peer). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int floor_xdp_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}
char _license[] SEC("license") = "GPL";
