/* SPDX-License-Identifier: GPL-2.0 */
/* Test fixture for compiler: bcc (compiled by bcc on the host, not by `make bpf`):
 * drops UDP to DROP_PORT (IPv4) and counts the drops per CPU. */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>

#ifndef DROP_PORT
#define DROP_PORT 9999
#endif

BPF_PERCPU_ARRAY(bcc_drops, u64, 1);

int xdp_bcc_drop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	u32 k = 0;
	u64 *count;

	if ((void *)(eth + 1) > end || eth->h_proto != htons(ETH_P_IP))
		return XDP_PASS;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return XDP_PASS;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	if (udp->dest == htons(DROP_PORT)) {
		count = bcc_drops.lookup(&k);
		if (count)
			(*count)++;
		return XDP_DROP;
	}
	return XDP_PASS;
}
