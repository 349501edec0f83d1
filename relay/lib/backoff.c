/* Retry delays: exponential backoff with equal jitter, and the random source behind it. */
#include "outbox_relay/lib/backoff.h"

#include <math.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

int64_t backoff_delay_ms(int attempt, int64_t base_ms, int64_t max_ms, double rnd)
{
    if (max_ms <= 0 || base_ms <= 0)
        return 0;
    if (attempt < 1)
        attempt = 1;

    /*
     * Compare before shifting: base_ms << n overflows long before attempt
     * counts that a misconfigured max_attempts can reach.
     */
    int64_t d = max_ms;
    int shift = attempt - 1;
    if (base_ms < max_ms && shift < 62 && base_ms <= (max_ms >> shift))
        d = base_ms << shift;

    if (!(rnd > 0.0)) /* also catches NaN */
        rnd = 0.0;
    if (rnd >= 1.0)
        rnd = nextafter(1.0, 0.0);

    int64_t half = d / 2;
    int64_t span = d - half;
    /* span + 1 so that d itself is reachable; the clamp absorbs rounding for huge spans. */
    int64_t jitter = (int64_t)(rnd * ((double)span + 1.0));
    if (jitter > span)
        jitter = span;
    return half + jitter;
}

static uint64_t random_state;

/* splitmix64: spreads a low-entropy seed (time, pid) over all 64 bits. */
static uint64_t random_mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

double backoff_random(void)
{
    if (random_state == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t seed = ((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec) ^
                        ((uint64_t)getpid() << 32);
        random_state = random_mix(seed);
        if (random_state == 0) /* xorshift never leaves zero */
            random_state = 0x9E3779B97F4A7C15ULL;
    }

    /* xorshift64* */
    random_state ^= random_state >> 12;
    random_state ^= random_state << 25;
    random_state ^= random_state >> 27;
    uint64_t r = random_state * 0x2545F4914F6CDD1DULL;
    /* The top 53 bits fill a double's mantissa exactly: the result stays below 1. */
    return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}
