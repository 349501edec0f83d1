/* Retry delays: exponential backoff with "equal jitter". Pure. */
#ifndef OUTBOX_RELAY_BACKOFF_H
#define OUTBOX_RELAY_BACKOFF_H

#include <stdint.h>

/*
 * Delay before the next try after `attempt` failures (attempt >= 1).
 * d = min(max_ms, base_ms * 2^(attempt-1)); the result is uniform in
 * [d/2, d], picked by rnd in [0, 1). Half the delay is guaranteed (so retries
 * really spread out), the other half is random (so a burst of failures does
 * not retry in lockstep). Never overflows for large attempt counts.
 */
int64_t backoff_delay_ms(int attempt, int64_t base_ms, int64_t max_ms, double rnd);

/* A uniform double in [0, 1) from a thread-unsafe xorshift state seeded once. */
double backoff_random(void);

#endif
