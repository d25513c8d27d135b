/* SPDX-License-Identifier: GPL-2.0 */
/* Token buckets in whole tokens (packets or bytes).
 *
 * A bucket remembers the time up to which refill has been credited. Refill
 * credits only whole tokens and moves that time by exactly what they are
 * worth, so slow rates checked often still accumulate (no lost fractions).
 */
#ifndef FLEET_RATELIMIT_H
#define FLEET_RATELIMIT_H

#include <linux/types.h>

#define FLEET_NSEC 1000000000ULL
#define FLEET_REFILL_CAP_NS (4 * FLEET_NSEC) /* bounds elapsed * rate below 2^64 for rates < 4e9/s */

/* Refill *tokens at rate per second up to burst, credited up to now.
 * rate must be > 0. */
static __always_inline void fleet_bucket_refill(__u64 *tokens, __u64 *stamp, __u64 now, __u64 rate, __u64 burst)
{
	__u64 elapsed, add;

	if (now <= *stamp)
		return;
	elapsed = now - *stamp;
	if (elapsed > FLEET_REFILL_CAP_NS)
		elapsed = FLEET_REFILL_CAP_NS;
	add = elapsed * rate / FLEET_NSEC;
	if (!add)
		return;
	if (*tokens + add >= burst) {
		*tokens = burst;
		*stamp = now;
	} else {
		*tokens += add;
		*stamp += add * FLEET_NSEC / rate;
	}
}

#endif
