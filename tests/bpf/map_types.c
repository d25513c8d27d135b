/* SPDX-License-Identifier: GPL-2.0 */
/* Test fixture for ebpf.fleet.bpf_map: one map of every type the data-plane
 * programs use, with keys and values that exercise every notation the codec
 * knows (addresses, ports, MACs, enums, flags, arrays, strings, bools,
 * network-order integers, CIDR keys), and a one-slot array of maps whose
 * inner LPM trie is replaced atomically. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "fleet/types.h"

enum fleet_verdict {
	FLEET_VERDICT_PASS = 0,
	FLEET_VERDICT_DROP = 1,
	FLEET_VERDICT_REDIRECT = 2,
};

enum rule_flags {
	RULE_FLAG_LOG = 1,
	RULE_FLAG_COUNT = 2,
	RULE_FLAG_TCP = 4,
};

struct vip_key {
	fleet_ipv4_t vip;
	fleet_port_t port;
	__u8 proto;
	__u8 pad;
};

struct backend {
	fleet_ipv6_t addr6;
	fleet_mac_t mac;
	__u16 weight;
	__s32 delta;
	char name[8];
	_Bool enabled;
	__u8 pad[3];
	enum fleet_verdict verdict;
	enum rule_flags flags;
	__be32 mark;
	__u32 ports[3];
	__s8 tiny;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1100000);
	__type(key, struct vip_key);
	__type(value, struct backend);
} vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1100000);
	__type(key, fleet_ipv4_t);
	__type(value, enum fleet_verdict);
} deny_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, fleet_ipv6_t);
	__type(value, __u64);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, enum fleet_verdict);
} policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, fleet_mac_t);
} macs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct fleet_counter);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, fleet_port_t);
	__type(value, __u32);
} port_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1100000);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fleet_lpm_v4);
	__type(value, enum fleet_verdict);
} prefixes_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fleet_lpm_v6);
	__type(value, enum rule_flags);
} prefixes_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} jump SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} ports SEC(".maps");

/* The rule set the program reads as one unit: a one-slot outer map. */
struct rules_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1100000);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fleet_lpm_v4);
	__type(value, enum fleet_verdict);
};

struct rules_inner rules_v4_a SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct rules_inner);
} rules_v4 SEC(".maps") = {
	.values = { [0] = &rules_v4_a },
};

SEC("xdp")
int map_types_prog(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct fleet_lpm_v4 key = { .prefixlen = 32, .addr = 0 };
	void *inner = bpf_map_lookup_elem(&rules_v4, &zero);

	if (inner && bpf_map_lookup_elem(inner, &key))
		return XDP_DROP;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
