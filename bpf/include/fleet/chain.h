/* SPDX-License-Identifier: GPL-2.0 */
/* Several XDP (or TC) programs on one hook, in order, without the `ext`
 * program type.
 *
 * ebpf.fleet attaches the first program of an interface's chain to the hook
 * and puts the others in a program array, one slot per position. A program
 * that wants the next one in the chain to see the packet returns through
 * fleet_xdp_next() / fleet_tc_next(): the helper tail-calls the next
 * occupied slot and, when there is none (or the program runs alone, or under
 * libxdp's dispatcher), returns the verdict unchanged.
 *
 * The loader sets fleet_chain_slot (this program's position) and
 * fleet_chain_next (the next one's) in .rodata and hands every program of the
 * chain the same fleet_chain map before load, so passing a packet on costs one
 * tail call.
 * A new chain (program added, removed, reordered or upgraded) is built
 * beside the running one and swapped in with one atomic link update, so a
 * packet sees the whole old chain or the whole new one.
 *
 * The same objects carry libxdp's run configuration (priority,
 * chain_call_actions) so that xdp-loader can put them behind its dispatcher
 * on kernels that have `ext`.
 */
#ifndef FLEET_CHAIN_H
#define FLEET_CHAIN_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef FLEET_CHAIN_MAX
#define FLEET_CHAIN_MAX 8
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, FLEET_CHAIN_MAX);
	__type(key, __u32);
	__type(value, __u32);
} fleet_chain SEC(".maps");

/* Position of this program in its interface's chain, and the slot of the
 * program after it (0: this one is last); both set by the loader. */
volatile const __u32 fleet_chain_slot = 0;
volatile const __u32 fleet_chain_next = 0;

static __always_inline void fleet_chain_tail(void *ctx)
{
	/* One tail call to the next program; when the slot is empty (or the
	 * program runs alone, or behind libxdp's dispatcher) it falls through. */
	if (fleet_chain_next)
		bpf_tail_call(ctx, &fleet_chain, fleet_chain_next);
}

/* XDP: continue the chain on XDP_PASS, otherwise the verdict stands. */
static __always_inline int fleet_xdp_next(struct xdp_md *ctx, int verdict)
{
	if (verdict == XDP_PASS)
		fleet_chain_tail(ctx);
	return verdict;
}

/* TC: continue the chain on TC_ACT_OK / TC_ACT_UNSPEC (TCX_NEXT). */
static __always_inline int fleet_tc_next(struct __sk_buff *skb, int verdict)
{
	if (verdict == 0 /* TC_ACT_OK */ || verdict == -1 /* TC_ACT_UNSPEC */)
		fleet_chain_tail(skb);
	return verdict;
}

/* libxdp run configuration (see xdp-tools' xdp_helpers.h): lower priority
 * runs first; chain_call_actions are the verdicts that continue the chain. */
#define FLEET_XDP_RUN_CONFIG(prog, prio) \
	struct {                         \
		__uint(priority, prio);  \
		__uint(XDP_PASS, 1);     \
	} _##prog SEC(".xdp_run_config")

#endif
