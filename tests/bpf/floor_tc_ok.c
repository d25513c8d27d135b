/* SPDX-License-Identifier: GPL-2.0 */
/* Benchmark floor: a TC program that returns TC_ACT_OK and does nothing else. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int floor_tc_ok(struct __sk_buff *skb)
{
	return 0; /* TC_ACT_OK */
}
char _license[] SEC("license") = "GPL";
