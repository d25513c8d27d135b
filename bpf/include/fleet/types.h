/* SPDX-License-Identifier: GPL-2.0 */
/* Named types that user space recognises through BTF.
 *
 * ebpf.fleet converts map keys and values between the operator's YAML and
 * bytes by reading the map's BTF. A field declared with one of these typedefs
 * is read and written in the operator's notation:
 *
 *   fleet_ipv4_t   "192.0.2.1"          4 bytes, network order
 *   fleet_ipv6_t   "2001:db8::1"        16 bytes, network order
 *   fleet_mac_t    "02:00:00:00:00:01"  6 bytes
 *   fleet_port_t   443                  2 bytes, network order
 *   __be16/__be32  integers stored in network order
 *
 * An LPM trie key is a struct whose first member is "__u32 prefixlen",
 * followed by the address: it is written as a CIDR ("192.0.2.0/24").
 * An enum is written by the name of one of its values, without the common
 * prefix and in lower case (FLEET_VERDICT_DROP -> "drop"); an enum whose type
 * name ends in "_flags" holds a list of names OR-ed together.
 */
#ifndef FLEET_TYPES_H
#define FLEET_TYPES_H

#include <linux/types.h>

typedef __u32 fleet_ipv4_t;
typedef struct fleet_ipv6 {
	__u8 addr[16];
} fleet_ipv6_t;
typedef struct fleet_mac {
	__u8 addr[6];
} fleet_mac_t;
typedef __u16 fleet_port_t;

/* LPM trie keys, written as CIDR strings. */
struct fleet_lpm_v4 {
	__u32 prefixlen;
	fleet_ipv4_t addr;
};

struct fleet_lpm_v6 {
	__u32 prefixlen;
	fleet_ipv6_t addr;
};

/* Counters: per-CPU, summed by user space. */
struct fleet_counter {
	__u64 packets;
	__u64 bytes;
};

#endif
