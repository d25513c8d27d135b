/* SPDX-License-Identifier: GPL-2.0 */
/* A driver for timing xdp_lb's new-flow path back to back (tests/bench/bench_dataplane_lb.py): run with
 * BPF_PROG_TEST_RUN and repeat N, it gives every iteration a new 5-tuple in the reused buffer, then tail-calls
 * the program in slot 0 of driver_next (xdp_lb, or the XDP_TX floor: the driver's own work is on both sides).
 *
 * repeat reuses one buffer, so it first undoes what the previous iteration did to it: an outer IPv4 or IPv6
 * header of xdp_lb's IPIP / IP6IP6 forwarding is removed (ethertype from the inner version). Then the source
 * port and the source address's last byte take a per-CPU sequence number: 16 + its high part for CPU 0, 144 +
 * for CPU 1, so two CPUs never make the same flow and the benchmark's other flows (last bytes below 16) are
 * never met. Frames: untagged, TCP or UDP, no IP options. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} driver_next SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} driver_seq SEC(".maps");

static __always_inline int driver_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(*eth);
	struct ipv6hdr *ip6h = data + sizeof(*eth);
	struct ethhdr saved;
	__u8 *inner;
	int outer;

	if ((void *)(ip6h + 1) > end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP) && (iph->protocol == IPPROTO_IPIP || iph->protocol == IPPROTO_IPV6))
		outer = sizeof(*iph);
	else if (eth->h_proto == bpf_htons(ETH_P_IPV6) && (ip6h->nexthdr == IPPROTO_IPIP || ip6h->nexthdr == IPPROTO_IPV6))
		outer = sizeof(*ip6h);
	else
		return 0;
	__builtin_memcpy(&saved, eth, sizeof(saved));
	if (bpf_xdp_adjust_head(ctx, outer))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	inner = data + sizeof(*eth);
	if ((void *)(inner + 1) > end)
		return -1;
	saved.h_proto = (*inner >> 4) == 6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	__builtin_memcpy(eth, &saved, sizeof(saved));
	return 0;
}

SEC("xdp")
int lb_newflow_driver(struct xdp_md *ctx)
{
	void *data, *end;
	struct ethhdr *eth;
	__u32 zero = 0, *seq, n;
	__be16 *sport;
	__u8 *last;

	if (driver_decap(ctx) < 0)
		return XDP_ABORTED;
	seq = bpf_map_lookup_elem(&driver_seq, &zero);
	if (!seq)
		return XDP_ABORTED;
	n = (*seq)++ | ((bpf_get_smp_processor_id() & 1) << 23);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		last = (__u8 *)&iph->saddr + 3;
		sport = (void *)(iph + 1);
	} else {
		struct ipv6hdr *ip6h = (void *)(eth + 1);

		last = (__u8 *)&ip6h->saddr + 15;
		sport = (void *)(ip6h + 1);
	}
	if ((void *)(sport + 1) > end)
		return XDP_ABORTED;
	*sport = bpf_htons(n & 0xffff);
	*last = 16 + (n >> 16);
	bpf_tail_call(ctx, &driver_next, 0);
	return XDP_ABORTED;
}
char _license[] SEC("license") = "GPL";
