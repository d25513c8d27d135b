/* SPDX-License-Identifier: GPL-2.0 */
/* Test fixture: xdp_drop_udp with an incompatible map (16 drop slots instead of 2). */
#define DROP_SLOTS 16
#include "xdp_drop_udp.c"
