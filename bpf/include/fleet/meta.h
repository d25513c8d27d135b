/* SPDX-License-Identifier: GPL-2.0 */
/* The XDP -> TC handoff: what xdp_filter leaves in front of a packet (XDP
 * metadata, bpf_xdp_adjust_meta) for tc_ingress_mark to read.
 *
 * A filter rule with a mark (fleet_filter_rule.mark, not 0) whose packet
 * passes (or is redirected) gets a struct fleet_xdp_meta prepended to its
 * metadata area (at data_meta). The kernel keeps the area with the skb it
 * builds (native XDP on drivers that support metadata, veth among them, and
 * generic XDP); on the interface's TC ingress hook, tc_ingress_mark finds it
 * at __sk_buff->data_meta, checks the magic and sets skb->mark, which
 * tc_egress classifies by (egress_mark_classes / egress_marks) when the
 * packet leaves, routed or locally answered alike. The magic keeps metadata
 * written by other XDP programs from being taken for a mark.
 */
#ifndef FLEET_META_H
#define FLEET_META_H

#include <linux/types.h>

#define FLEET_XDP_META_MAGIC 0x666c6d6b /* "flmk" */

struct fleet_xdp_meta {
	__u32 mark;  /* for skb->mark; 0 is never written */
	__u32 magic; /* FLEET_XDP_META_MAGIC */
};

/* tc_mark_stats[outcome] */
enum fleet_mark_outcome {
	FLEET_MARK_SET = 0,  /* metadata with the magic: skb->mark set */
	FLEET_MARK_NONE = 1, /* no (or foreign) metadata: skb->mark left as it was */
	FLEET_MARK_OUTCOMES = 2,
};

#endif
