/* SPDX-License-Identifier: GPL-2.0 */
/* The flow hash xdp_lb picks a Maglev slot with: MurmurHash3 (x86, 32-bit,
 * seed 0) over whole 32-bit words. plugins/module_utils/dataplane/maglev.py
 * (hash_words / flow_words) computes the same value; tests check both agree
 * through the backend the program picks.
 *
 * Words, in order: the source address words, the destination address words
 * (as loaded from the packet: little-endian loads of network-order bytes),
 * one word holding the two ports as they sit in the L4 header, the protocol.
 */
#ifndef FLEET_HASH_H
#define FLEET_HASH_H

#include <linux/types.h>

static __always_inline __u32 fleet_rotl32(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 fleet_murmur_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = fleet_rotl32(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = fleet_rotl32(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 fleet_murmur_final(__u32 h, __u32 len)
{
	h ^= len;
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* 5-tuple hash; nwords_addr = 1 (IPv4) or 4 (IPv6). */
static __always_inline __u32 fleet_flow_hash(const __u32 *src, const __u32 *dst, int nwords_addr, __u32 ports, __u32 proto)
{
	__u32 h = 0;
	int i;

#pragma unroll
	for (i = 0; i < 4; i++)
		if (i < nwords_addr)
			h = fleet_murmur_mix(h, src[i]);
#pragma unroll
	for (i = 0; i < 4; i++)
		if (i < nwords_addr)
			h = fleet_murmur_mix(h, dst[i]);
	h = fleet_murmur_mix(h, ports);
	h = fleet_murmur_mix(h, proto);
	return fleet_murmur_final(h, (2 * nwords_addr + 2) * 4);
}

#endif
