/* SPDX-License-Identifier: GPL-2.0 */
/* Packet parsing for the fleet's XDP and TC programs.
 *
 * A cursor walks the packet; every helper checks bounds before it reads a
 * header and moves the cursor past it. The helpers return the next protocol
 * (>= 0) or a negative FLEET_PARSE_* code. fleet_parse_packet() runs the
 * whole walk (Ethernet, up to two VLAN tags, IPv4 or IPv6 with extension
 * headers, TCP/UDP/ICMP) and fills a struct fleet_pkt.
 */
#ifndef FLEET_PARSING_H
#define FLEET_PARSING_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef FLEET_VLAN_MAX
#define FLEET_VLAN_MAX 2
#endif
#ifndef FLEET_IPV6_EXT_MAX
#define FLEET_IPV6_EXT_MAX 6
#endif

#define FLEET_PARSE_TRUNCATED (-1) /* a header runs past the end */
#define FLEET_PARSE_MALFORMED (-2) /* a header's fields are impossible */
#define FLEET_PARSE_TOO_DEEP (-3)  /* more VLAN tags or extension headers than the bound */

/* IP fragment position */
#define FLEET_FRAG_NONE 0
#define FLEET_FRAG_FIRST 1 /* offset 0, more fragments: L4 header present */
#define FLEET_FRAG_LATER 2 /* offset > 0: no L4 header */

struct hdr_cursor {
	void *pos;
};

struct fleet_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

struct fleet_ipv6_opt_hdr {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct fleet_ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset << 3 | M flag */
	__be32 identification;
};

/* What a program needs to know about a packet after one parse. */
struct fleet_pkt {
	__u16 l3_proto; /* host order: ETH_P_IP, ETH_P_IPV6, or the unparsed ethertype */
	__u8 l4_proto;	/* IPPROTO_*, 0 when not reached */
	__u8 vlan_depth;
	__u8 frag;	 /* FLEET_FRAG_* */
	__u8 ip_options; /* IPv4 options present, or IPv6 extension headers walked */
	__u8 tcp_flags;	 /* byte 13 of the TCP header (FIN 0x01 SYN 0x02 RST 0x04 ACK 0x10) */
	__u8 icmp_type;
	__u16 l3_off; /* offsets from the start of the frame */
	__u16 l4_off;
	__u16 vlan_id[FLEET_VLAN_MAX];
	__be16 sport; /* network order; ICMP: identifier in sport for echo */
	__be16 dport;
	__u32 l3_len; /* IP total length (IPv4) / payload + 40 (IPv6) */
	union {
		__be32 v4;
		__u8 v6[16];
		__u32 v6w[4];
	} saddr, daddr;
};

static __always_inline int fleet_parse_eth(struct hdr_cursor *c, void *end, struct fleet_pkt *pkt)
{
	struct ethhdr *eth = c->pos;
	__u16 proto;
	int i;

	if ((void *)(eth + 1) > end)
		return FLEET_PARSE_TRUNCATED;
	c->pos = eth + 1;
	proto = eth->h_proto;

#pragma unroll
	for (i = 0; i < FLEET_VLAN_MAX; i++) {
		struct fleet_vlan_hdr *vh = c->pos;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > end)
			return FLEET_PARSE_TRUNCATED;
		pkt->vlan_id[i] = bpf_ntohs(vh->tci) & 0x0fff;
		pkt->vlan_depth = i + 1;
		proto = vh->encap_proto;
		c->pos = vh + 1;
	}
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return FLEET_PARSE_TOO_DEEP;
	return bpf_ntohs(proto);
}

static __always_inline int fleet_parse_ipv4(struct hdr_cursor *c, void *end, struct fleet_pkt *pkt)
{
	struct iphdr *iph = c->pos;
	__u32 hlen;
	__u16 frag_off;

	if ((void *)(iph + 1) > end)
		return FLEET_PARSE_TRUNCATED;
	if (iph->version != 4 || iph->ihl < 5)
		return FLEET_PARSE_MALFORMED;
	hlen = iph->ihl * 4;
	if (c->pos + hlen > end)
		return FLEET_PARSE_TRUNCATED;
	if (bpf_ntohs(iph->tot_len) < hlen)
		return FLEET_PARSE_MALFORMED;

	pkt->l3_len = bpf_ntohs(iph->tot_len);
	pkt->saddr.v4 = iph->saddr;
	pkt->daddr.v4 = iph->daddr;
	pkt->ip_options = hlen > sizeof(*iph);
	frag_off = bpf_ntohs(iph->frag_off);
	if (frag_off & 0x1fff)
		pkt->frag = FLEET_FRAG_LATER;
	else if (frag_off & 0x2000)
		pkt->frag = FLEET_FRAG_FIRST;
	c->pos += hlen;
	return iph->protocol;
}

static __always_inline int fleet_ipv6_is_ext(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING || nexthdr == IPPROTO_DSTOPTS ||
	       nexthdr == IPPROTO_FRAGMENT || nexthdr == IPPROTO_AH;
}

static __always_inline int fleet_parse_ipv6(struct hdr_cursor *c, void *end, struct fleet_pkt *pkt)
{
	struct ipv6hdr *ip6h = c->pos;
	__u8 nexthdr;
	int i;

	if ((void *)(ip6h + 1) > end)
		return FLEET_PARSE_TRUNCATED;
	if (ip6h->version != 6)
		return FLEET_PARSE_MALFORMED;
	pkt->l3_len = bpf_ntohs(ip6h->payload_len) + sizeof(*ip6h);
	__builtin_memcpy(pkt->saddr.v6, &ip6h->saddr, 16);
	__builtin_memcpy(pkt->daddr.v6, &ip6h->daddr, 16);
	nexthdr = ip6h->nexthdr;
	c->pos = ip6h + 1;

#pragma unroll
	for (i = 0; i < FLEET_IPV6_EXT_MAX; i++) {
		if (!fleet_ipv6_is_ext(nexthdr))
			return nexthdr;
		pkt->ip_options = 1;
		if (nexthdr == IPPROTO_FRAGMENT) {
			struct fleet_ipv6_frag_hdr *fh = c->pos;
			__u16 off;

			if ((void *)(fh + 1) > end)
				return FLEET_PARSE_TRUNCATED;
			off = bpf_ntohs(fh->frag_off);
			if (off & 0xfff8)
				pkt->frag = FLEET_FRAG_LATER;
			else if (off & 1)
				pkt->frag = FLEET_FRAG_FIRST;
			nexthdr = fh->nexthdr;
			c->pos = fh + 1;
			if (pkt->frag == FLEET_FRAG_LATER)
				return nexthdr; /* no L4 header follows */
		} else {
			struct fleet_ipv6_opt_hdr *oh = c->pos;
			__u32 len;

			if ((void *)(oh + 1) > end)
				return FLEET_PARSE_TRUNCATED;
			/* AH counts 4-byte units minus 2; the others 8-byte units minus 1 */
			len = nexthdr == IPPROTO_AH ? (oh->hdrlen + 2) * 4 : (oh->hdrlen + 1) * 8;
			if (c->pos + len > end)
				return FLEET_PARSE_TRUNCATED;
			nexthdr = oh->nexthdr;
			c->pos += len;
		}
	}
	if (fleet_ipv6_is_ext(nexthdr))
		return FLEET_PARSE_TOO_DEEP;
	return nexthdr;
}

static __always_inline int fleet_parse_l4(struct hdr_cursor *c, void *end, struct fleet_pkt *pkt)
{
	if (pkt->l4_proto == IPPROTO_TCP) {
		struct tcphdr *th = c->pos;

		if ((void *)(th + 1) > end)
			return FLEET_PARSE_TRUNCATED;
		if (th->doff < 5)
			return FLEET_PARSE_MALFORMED;
		if (c->pos + th->doff * 4 > end)
			return FLEET_PARSE_TRUNCATED;
		pkt->sport = th->source;
		pkt->dport = th->dest;
		pkt->tcp_flags = ((__u8 *)th)[13];
	} else if (pkt->l4_proto == IPPROTO_UDP) {
		struct udphdr *uh = c->pos;

		if ((void *)(uh + 1) > end)
			return FLEET_PARSE_TRUNCATED;
		if (bpf_ntohs(uh->len) < sizeof(*uh))
			return FLEET_PARSE_MALFORMED;
		pkt->sport = uh->source;
		pkt->dport = uh->dest;
	} else if (pkt->l4_proto == IPPROTO_ICMP || pkt->l4_proto == IPPROTO_ICMPV6) {
		struct icmphdr *ih = c->pos;

		if ((void *)ih + 8 > end)
			return FLEET_PARSE_TRUNCATED;
		pkt->icmp_type = ih->type;
		pkt->sport = ih->un.echo.id;
	}
	return 0;
}

/* Parse a whole frame. Returns 0 when every header up to L4 was read (or the
 * packet is not IP: check pkt->l3_proto), or a negative FLEET_PARSE_* code
 * with pkt filled as far as the parse got. Non-first fragments stop at L3.
 * The caller zeroes pkt first (struct fleet_pkt pkt = {};). */
static __always_inline int fleet_parse_packet(void *data, void *end, struct fleet_pkt *pkt)
{
	struct hdr_cursor c = { .pos = data };
	int proto;

	proto = fleet_parse_eth(&c, end, pkt);
	if (proto < 0)
		return proto;
	pkt->l3_proto = proto;
	pkt->l3_off = c.pos - data;

	if (proto == ETH_P_IP)
		proto = fleet_parse_ipv4(&c, end, pkt);
	else if (proto == ETH_P_IPV6)
		proto = fleet_parse_ipv6(&c, end, pkt);
	else
		return 0;
	if (proto < 0)
		return proto;
	pkt->l4_proto = proto;
	pkt->l4_off = c.pos - data;
	if (pkt->frag == FLEET_FRAG_LATER)
		return 0;
	return fleet_parse_l4(&c, end, pkt);
}

#endif
