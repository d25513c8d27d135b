// SPDX-License-Identifier: GPL-2.0
/* The lab's bridge-side end of the load balancer's veth: an XDP program that passes everything. A veth
 * receives what its peer's XDP program sends back (XDP_TX) only when it runs XDP itself (its NAPI is on);
 * scripts/lab.sh compiles this and attaches it there. */
#include <linux/bpf.h>

__attribute__((section("xdp"), used)) int lab_port_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] __attribute__((section("license"), used)) = "GPL";
