/* SPDX-License-Identifier: GPL-2.0 */
/* Shared by the drop-UDP test fixtures: the packet test, through the collection's parser. */
#ifndef FIXTURE_DROP_UDP_H
#define FIXTURE_DROP_UDP_H

#include "fleet/parsing.h"

#ifndef DROP_PORT
#define DROP_PORT 9999
#endif

/* An IPv4 UDP datagram (with its header) to DROP_PORT? */
static __always_inline int fixture_udp_to_drop_port(void *data, void *end)
{
	struct fleet_pkt pkt = {};

	if (fleet_parse_packet(data, end, &pkt) < 0)
		return 0;
	return pkt.l3_proto == ETH_P_IP && pkt.l4_proto == IPPROTO_UDP && pkt.frag != FLEET_FRAG_LATER &&
	       pkt.dport == bpf_htons(DROP_PORT);
}

#endif
