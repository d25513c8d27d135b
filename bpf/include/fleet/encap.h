/* SPDX-License-Identifier: GPL-2.0 */
/* Outer headers for xdp_lb's IPIP / IP6IP6 forwarding, and the IPv4 header
 * checksum. The caller has made room with bpf_xdp_adjust_head and checked
 * that the outer header fits before the end of the packet. */
#ifndef FLEET_ENCAP_H
#define FLEET_ENCAP_H

#include <linux/types.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>

/* RFC 1071 checksum of a 20-byte IPv4 header (check field zero). */
static __always_inline __u16 fleet_ipv4_csum(const struct iphdr *iph)
{
	const __u16 *w = (const __u16 *)iph;
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < (int)(sizeof(*iph) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* An address inside a prefix: the prefix's bits, then host bits from hash. */
static __always_inline __be32 fleet_prefix_host(__be32 prefix, __u32 prefixlen, __u32 hash)
{
	__u32 hostmask;

	if (prefixlen >= 32)
		return prefix;
	hostmask = 0xffffffffu >> prefixlen;
	return bpf_htonl((bpf_ntohl(prefix) & ~hostmask) | (hash & hostmask));
}

static __always_inline void fleet_outer_ipv4(struct iphdr *outer, __u8 tos, __u16 inner_len, __u8 proto, __be32 saddr,
					     __be32 daddr)
{
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = tos;
	outer->tot_len = bpf_htons(inner_len + sizeof(*outer));
	outer->id = 0;
	outer->frag_off = 0;
	outer->ttl = FLEET_LB_TTL;
	outer->protocol = proto;
	outer->check = 0;
	outer->saddr = saddr;
	outer->daddr = daddr;
	outer->check = fleet_ipv4_csum(outer);
}

static __always_inline void fleet_outer_ipv6(struct ipv6hdr *outer, __u8 tclass, __u32 flowlabel, __u16 inner_len, __u8 proto,
					     const __u32 *saddr, const __u32 *daddr)
{
	__u32 *w = (__u32 *)outer;

	/* version 6, traffic class, 20-bit flow label */
	w[0] = bpf_htonl((6u << 28) | ((__u32)tclass << 20) | (flowlabel & 0xfffff));
	outer->payload_len = bpf_htons(inner_len);
	outer->nexthdr = proto;
	outer->hop_limit = FLEET_LB_TTL;
	__builtin_memcpy(&outer->saddr, saddr, 16);
	__builtin_memcpy(&outer->daddr, daddr, 16);
}

#endif
