/* SPDX-License-Identifier: GPL-2.0 */
/* Incremental Internet checksum updates (RFC 1624: HC' = ~(~HC + ~m + m')). */
#ifndef FLEET_CSUM_H
#define FLEET_CSUM_H

#include <linux/types.h>

static __always_inline __u16 fleet_csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* Replace one 16-bit word (old -> new, both as stored in the packet) under a
 * checksum field (as stored in the packet). Byte order does not matter as
 * long as all three are in the same order. */
static __always_inline void fleet_csum_replace2(__u16 *check, __u16 old, __u16 new)
{
	__u32 sum = (__u16) ~*check;

	sum += (__u16)~old;
	sum += new;
	*check = ~fleet_csum_fold(sum);
}

#endif
