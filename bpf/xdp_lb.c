/* SPDX-License-Identifier: GPL-2.0 */
/* xdp_lb: an L4 load balancer for VIPs keyed by (address, port, protocol).
 *
 * Per packet: parse (fleet/parsing.h); find the VIP; take the backend from
 * the connection table (shared by all CPUs), or from the VIP's weighted Maglev ring
 * (computed by plugins/module_utils/dataplane/maglev.py) by the flow hash
 * (fleet/hash.h); forward by L2 DSR (new MACs) or IPIP / IP6IP6
 * encapsulation, and XDP_TX. Anything not for a VIP continues the chain
 * untouched. Layouts and constants: fleet/lb.h. Design: docs/lb.md.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "fleet/types.h"
#include "fleet/chain.h"
#include "fleet/parsing.h"
#include "fleet/lb.h"
#include "fleet/hash.h"
#include "fleet/encap.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLEET_LB_MAX_VIPS);
	__type(key, struct fleet_lb_vip4_key);
	__type(value, struct fleet_lb_vip);
} lb_vips_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FLEET_LB_MAX_VIPS);
	__type(key, struct fleet_lb_vip6_key);
	__type(value, struct fleet_lb_vip);
} lb_vips_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLEET_LB_RING_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} lb_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLEET_LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct fleet_lb_backend);
} lb_backends SEC(".maps");

/* The connection table: ONE value per flow, shared by every CPU, so a flow that moves to another CPU
 * (RSS, RPS, queue count changes) finds the backend really chosen for it. Never a per-CPU value: an
 * insert into an LRU_PERCPU_HASH zero-fills the other CPUs' slots, and backend 0 is a real backend.
 * BPF_F_NO_COMMON_LRU: each CPU keeps its own LRU list (no global LRU lock on insert or eviction);
 * max_entries is per CPU here, the loader multiplies it by the possible CPUs (docs/lb.md). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, FLEET_LB_CONNTRACK_PER_CPU);
	__type(key, struct fleet_lb_flow4);
	__type(value, struct fleet_lb_conn);
} lb_conntrack_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, FLEET_LB_CONNTRACK_PER_CPU);
	__type(key, struct fleet_lb_flow6);
	__type(value, struct fleet_lb_conn);
} lb_conntrack_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fleet_lb_config);
} lb_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLEET_LB_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct fleet_counter);
} lb_vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLEET_LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct fleet_counter);
} lb_backend_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLEET_LB_STAT_MAX);
	__type(key, enum fleet_lb_stat);
	__type(value, struct fleet_counter);
} lb_stats SEC(".maps");

static __always_inline void lb_count(void *map, __u32 key, __u64 bytes)
{
	struct fleet_counter *c = bpf_map_lookup_elem(map, &key);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline int lb_pass(struct xdp_md *ctx, enum fleet_lb_stat why, __u64 bytes)
{
	lb_count(&lb_stats, why, bytes);
	return fleet_xdp_next(ctx, XDP_PASS);
}

/* The flow hash (fleet/hash.h): computed only when a pick or the outer header needs it. */
static __always_inline __u32 lb_hash(const struct fleet_pkt *pkt, int nwords)
{
	return fleet_flow_hash(pkt->saddr.v6w, pkt->daddr.v6w, nwords, (__u32)pkt->sport | ((__u32)pkt->dport << 16),
			       pkt->l4_proto);
}

/* The backend id at the flow's Maglev slot of the VIP's ring, or NONE. */
static __always_inline __u32 lb_maglev_pick(const struct fleet_lb_vip *vip, __u32 ring_size, __u32 hash)
{
	__u32 idx = vip->ring * ring_size + (__u32)(((__u64)hash * ring_size) >> 32);
	__u32 *id = bpf_map_lookup_elem(&lb_ring, &idx);

	return id ? *id : FLEET_LB_BACKEND_NONE;
}

/* Write the saved L2 header (l2len bytes: 14, 18 or 22) and the outer IP header
 * at the new packet start; ethertype of the last L2 header -> the outer family. */
static __always_inline int lb_encap_write(struct xdp_md *ctx, const __u8 *l2, const int l2len, const struct fleet_lb_backend *be,
					  const struct fleet_lb_config *cfg, const __u8 *smac, __u32 hash, __u8 tos,
					  __u16 inner_len, __u8 inner_proto)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__be16 *etype = data + l2len - 2;

	if (be->family == FLEET_LB_FAMILY_IPV4) {
		struct iphdr *outer = data + l2len;
		__be32 saddr;

		if ((void *)(outer + 1) > end)
			return -1;
		__builtin_memcpy(data, l2, l2len);
		*etype = bpf_htons(ETH_P_IP);
		saddr = fleet_prefix_host(cfg->tunnel_src_v4.addr, cfg->tunnel_src_v4.prefixlen, hash);
		fleet_outer_ipv4(outer, tos, inner_len, inner_proto, saddr, be->addr4);
	} else {
		struct ipv6hdr *outer = data + l2len;
		__u32 saddr[4];

		if ((void *)(outer + 1) > end)
			return -1;
		__builtin_memcpy(data, l2, l2len);
		*etype = bpf_htons(ETH_P_IPV6);
		__builtin_memcpy(saddr, &cfg->tunnel_src_v6.addr, 16);
		if (cfg->tunnel_src_v6.prefixlen < 128) {
			__u32 plen = cfg->tunnel_src_v6.prefixlen;

			saddr[3] = fleet_prefix_host(saddr[3], plen > 96 ? plen - 96 : 0, hash);
		}
		fleet_outer_ipv6(outer, tos, hash, inner_len, inner_proto, saddr, (const __u32 *)&be->addr6);
	}
	__builtin_memcpy(eth->h_dest, be->mac.addr, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	return 0;
}

static __always_inline int lb_encap(struct xdp_md *ctx, const struct fleet_pkt *pkt, const struct fleet_lb_backend *be,
				    const struct fleet_lb_config *cfg, __u32 hash)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u8 l2[14 + 4 * FLEET_VLAN_MAX];
	__u8 smac[ETH_ALEN];
	__u8 tos, inner_proto;
	__u16 inner_len = pkt->l3_len;
	int outer_len, depth = pkt->vlan_depth;
	void *l3;

	if (be->family == FLEET_LB_FAMILY_IPV4) {
		if (!cfg->tunnel_src_v4.addr)
			return -1;
		outer_len = sizeof(struct iphdr);
	} else {
		const __u32 *w = (const __u32 *)&cfg->tunnel_src_v6.addr;

		if (!(w[0] | w[1] | w[2] | w[3]))
			return -1;
		outer_len = sizeof(struct ipv6hdr);
	}
	if (depth > FLEET_VLAN_MAX)
		return -1;
	l3 = data + 14 + 4 * depth;
	if (l3 + sizeof(struct ipv6hdr) > end && pkt->l3_proto == ETH_P_IPV6)
		return -1;
	if (l3 + sizeof(struct iphdr) > end)
		return -1;
	if (pkt->l3_proto == ETH_P_IP) {
		tos = ((struct iphdr *)l3)->tos;
		inner_proto = IPPROTO_IPIP;
	} else {
		struct ipv6hdr *ip6h = l3;

		tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
		inner_proto = IPPROTO_IPV6;
	}
	if (data + sizeof(l2) > end)
		return -1;
	__builtin_memcpy(l2, data, sizeof(l2));
	if (cfg->lb_mac.addr[0] | cfg->lb_mac.addr[1] | cfg->lb_mac.addr[2] | cfg->lb_mac.addr[3] | cfg->lb_mac.addr[4] |
	    cfg->lb_mac.addr[5])
		__builtin_memcpy(smac, cfg->lb_mac.addr, ETH_ALEN);
	else
		__builtin_memcpy(smac, l2, ETH_ALEN); /* the frame's destination: this interface */

	if (bpf_xdp_adjust_head(ctx, -outer_len))
		return -1;
	if (depth == 0)
		return lb_encap_write(ctx, l2, 14, be, cfg, smac, hash, tos, inner_len, inner_proto);
	if (depth == 1)
		return lb_encap_write(ctx, l2, 18, be, cfg, smac, hash, tos, inner_len, inner_proto);
	return lb_encap_write(ctx, l2, 22, be, cfg, smac, hash, tos, inner_len, inner_proto);
}

/* A packet for a VIP: backend from the connection table or Maglev, then forward.
 * Called once per family with a constant map, so each lookup is a direct call. */
static __always_inline int lb_balance(struct xdp_md *ctx, struct fleet_pkt *pkt, struct fleet_lb_vip *vip, void *ct, void *flow,
				      int nwords, __u64 bytes)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct fleet_lb_config *cfg;
	struct fleet_lb_backend *be;
	struct fleet_lb_conn *conn = NULL, fresh = {};
	__u32 zero = 0, hash = 0, ring_size, backend = FLEET_LB_BACKEND_NONE;
	__u64 now, timeout;
	int insert = 1, hashed = 0;

	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	if (!cfg)
		return XDP_ABORTED;
	lb_count(&lb_vip_stats, vip->id, bytes);

	ring_size = cfg->ring_size ? cfg->ring_size : FLEET_LB_DEFAULT_RING_SIZE;

	if (pkt->l4_proto == IPPROTO_TCP && (pkt->tcp_flags & 0x12) == 0x02) {
		/* SYN: a new connection; whatever the table says is stale (an entry
		 * of this 5-tuple is overwritten in place below) */
		lb_count(&lb_stats, FLEET_LB_STAT_SYN, bytes);
		conn = bpf_map_lookup_elem(ct, flow);
	} else {
		conn = bpf_map_lookup_elem(ct, flow);
		if (conn) {
			if (pkt->l4_proto == IPPROTO_UDP) {
				now = bpf_ktime_get_ns();
				timeout = cfg->udp_timeout_ms ? cfg->udp_timeout_ms : FLEET_LB_DEFAULT_UDP_TIMEOUT_MS;
				if (now - conn->last_seen_ns > timeout * 1000000ULL) {
					lb_count(&lb_stats, FLEET_LB_STAT_UDP_EXPIRED, bytes);
					goto pick;
				}
				conn->last_seen_ns = now;
			}
			backend = conn->backend;
			be = bpf_map_lookup_elem(&lb_backends, &backend);
			if (be && be->family != FLEET_LB_FAMILY_NONE) {
				lb_count(&lb_stats, FLEET_LB_STAT_CT_HIT, bytes);
				goto forward;
			}
			/* the backend is gone: pick again */
		} else if (pkt->tcp_flags & 0x04) {
			lb_count(&lb_stats, FLEET_LB_STAT_RST, bytes);
			insert = 0;
		} else {
			lb_count(&lb_stats, FLEET_LB_STAT_CT_MISS, bytes);
		}
	}
pick:
	hash = lb_hash(pkt, nwords);
	hashed = 1;
	backend = lb_maglev_pick(vip, ring_size, hash);
	be = bpf_map_lookup_elem(&lb_backends, &backend);
	if (!be || be->family == FLEET_LB_FAMILY_NONE) {
		lb_count(&lb_stats, FLEET_LB_STAT_DROP_NO_BACKEND, bytes);
		return XDP_DROP;
	}
	if (insert) {
		fresh.backend = backend;
		fresh.last_seen_ns = pkt->l4_proto == IPPROTO_UDP ? bpf_ktime_get_ns() : 0;
		if (conn)
			*conn = fresh; /* in place: no new LRU node */
		else
			bpf_map_update_elem(ct, flow, &fresh, BPF_ANY);
	}

forward:
	lb_count(&lb_backend_stats, backend, bytes);
	if (vip->mode == FLEET_LB_MODE_IPIP) {
		if (!hashed)
			hash = lb_hash(pkt, nwords);
		if (lb_encap(ctx, pkt, be, cfg, hash) < 0) {
			lb_count(&lb_stats, FLEET_LB_STAT_DROP_ENCAP, bytes);
			return XDP_DROP;
		}
	} else {
		struct ethhdr *eth = data;

		if ((void *)(eth + 1) > end)
			return XDP_ABORTED;
		if (cfg->lb_mac.addr[0] | cfg->lb_mac.addr[1] | cfg->lb_mac.addr[2] | cfg->lb_mac.addr[3] | cfg->lb_mac.addr[4] |
		    cfg->lb_mac.addr[5])
			__builtin_memcpy(eth->h_source, cfg->lb_mac.addr, ETH_ALEN);
		else
			__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, be->mac.addr, ETH_ALEN);
	}
	lb_count(&lb_stats, FLEET_LB_STAT_TX, bytes);
	return XDP_TX;
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 bytes = end - data;
	struct fleet_pkt pkt = {};
	struct fleet_lb_vip *vip;
	int rc;

	rc = fleet_parse_packet(data, end, &pkt);
	if (rc < 0)
		return lb_pass(ctx, FLEET_LB_STAT_PASS_UNPARSED, bytes);
	if (pkt.l3_proto != ETH_P_IP && pkt.l3_proto != ETH_P_IPV6)
		return lb_pass(ctx, FLEET_LB_STAT_PASS_NON_VIP, bytes);
	if (pkt.frag != FLEET_FRAG_NONE)
		return lb_pass(ctx, FLEET_LB_STAT_PASS_FRAGMENT, bytes);
	if (pkt.l4_proto != IPPROTO_TCP && pkt.l4_proto != IPPROTO_UDP)
		return lb_pass(ctx, FLEET_LB_STAT_PASS_NON_VIP, bytes);

	if (pkt.l3_proto == ETH_P_IP) {
		struct fleet_lb_vip4_key key = { .vip = pkt.daddr.v4, .port = pkt.dport, .proto = pkt.l4_proto };
		struct fleet_lb_flow4 flow = {
			.src = pkt.saddr.v4, .dst = pkt.daddr.v4, .sport = pkt.sport, .dport = pkt.dport, .proto = pkt.l4_proto
		};

		vip = bpf_map_lookup_elem(&lb_vips_v4, &key);
		if (!vip)
			return lb_pass(ctx, FLEET_LB_STAT_PASS_NON_VIP, bytes);
		return lb_balance(ctx, &pkt, vip, &lb_conntrack_v4, &flow, 1, bytes);
	} else {
		struct fleet_lb_vip6_key key = { .port = pkt.dport, .proto = pkt.l4_proto };
		struct fleet_lb_flow6 flow = { .sport = pkt.sport, .dport = pkt.dport, .proto = pkt.l4_proto };

		__builtin_memcpy(&key.vip, pkt.daddr.v6, 16);
		vip = bpf_map_lookup_elem(&lb_vips_v6, &key);
		if (!vip)
			return lb_pass(ctx, FLEET_LB_STAT_PASS_NON_VIP, bytes);
		__builtin_memcpy(&flow.src, pkt.saddr.v6, 16);
		__builtin_memcpy(&flow.dst, pkt.daddr.v6, 16);
		return lb_balance(ctx, &pkt, vip, &lb_conntrack_v6, &flow, 4, bytes);
	}
}

FLEET_XDP_RUN_CONFIG(xdp_lb, 50);
char _license[] SEC("license") = "GPL";
