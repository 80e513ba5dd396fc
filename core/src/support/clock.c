/*
 * Time (monotonic and wall clock), randomness (OpenSSL's CSPRNG for
 * secrets, a fast thread-local generator for jitter) and Go-style
 * duration formatting for messages.
 */
#include "support/support.h"

#include <openssl/rand.h>
#include <string.h>
#include <stdio.h>
#include <time.h>

int64_t vk__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t vk__now_ms(void)
{
    return vk__now_us() / 1000;
}

int64_t vk__wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* RAND_bytes costs thousands of instructions a call, which shows in lock
 * acquisitions (one random value each): small requests are served from a
 * per-thread buffer of CSPRNG output. Bytes are wiped as they are handed
 * out, and a forked child discards what it inherited so that parent and
 * child never hand out the same values. */
#define VK_RANDOM_POOL 512

static _Thread_local unsigned char random_pool[VK_RANDOM_POOL];
static _Thread_local size_t random_left;
static _Thread_local unsigned random_generation;   /* vk__fork_generation() at refill */

int vk__random_bytes(void *buf, size_t n)
{
    if (n == 0)
        return 0;
    if (n > INT32_MAX)
        return -1;
    if (n > VK_RANDOM_POOL / 4)
        return RAND_bytes(buf, (int)n) == 1 ? 0 : -1;
    /* A generation counter rather than getpid(), which is a system call
     * on every lock acquisition. */
    unsigned generation = vk__fork_generation();
    if (random_generation != generation || random_left < n) {
        vk__fork_watch();   /* a later fork must bump the generation */
        if (RAND_bytes(random_pool, VK_RANDOM_POOL) != 1) {
            random_left = 0;
            return -1;
        }
        random_left = VK_RANDOM_POOL;
        random_generation = vk__fork_generation();
    }
    unsigned char *take = random_pool + VK_RANDOM_POOL - random_left;
    memcpy(buf, take, n);
    vk__wipe(take, n);
    random_left -= n;
    return 0;
}

/* xorshift64*: plenty for spreading retries, never used for secrets. */
static _Thread_local uint64_t jitter_state = 0;

static uint64_t next_jitter_value(void)
{
    if (VK_UNLIKELY(jitter_state == 0)) {
        uint64_t seed = 0;
        if (vk__random_bytes(&seed, sizeof seed) != 0 || seed == 0)
            seed = (uint64_t)vk__now_us() * 0x9E3779B97F4A7C15ULL + (uintptr_t)&seed;
        jitter_state = seed != 0 ? seed : 0x2545F4914F6CDD1DULL;
    }
    jitter_state ^= jitter_state >> 12;
    jitter_state ^= jitter_state << 25;
    jitter_state ^= jitter_state >> 27;
    return jitter_state * 0x2545F4914F6CDD1DULL;
}

int64_t vk__jitter(int64_t upper)
{
    if (upper <= 0)
        return 0;
    /* The modulo bias is below 2^-32 for any realistic upper bound. */
    return (int64_t)(next_jitter_value() % (uint64_t)upper);
}

/* Appends the seconds part: "1.5s", "2s", "0.25s" (trailing zeros cut).
 * Unsigned, so that the compiler knows frac has at most three digits. */
static int format_seconds(char *buf, size_t cap, uint64_t ms)
{
    uint64_t whole = ms / 1000;
    unsigned frac = (unsigned)(ms % 1000);
    if (frac == 0)
        return snprintf(buf, cap, "%llus", (unsigned long long)whole);
    char digits[4];
    snprintf(digits, sizeof digits, "%03u", frac);
    for (int i = 2; i > 0 && digits[i] == '0'; i--)
        digits[i] = '\0';
    return snprintf(buf, cap, "%llu.%ss", (unsigned long long)whole, digits);
}

void vk__format_duration_ms(char *buf, size_t cap, int64_t ms)
{
    if (buf == NULL || cap == 0)
        return;
    const char *sign = "";
    uint64_t magnitude = (uint64_t)ms;
    if (ms < 0) {
        sign = "-";
        magnitude = 0 - magnitude;
    }
    if (magnitude > (uint64_t)INT64_MAX)
        magnitude = (uint64_t)INT64_MAX; /* INT64_MIN: close enough */
    int64_t m = (int64_t)magnitude;
    int used = snprintf(buf, cap, "%s", sign);
    if (used < 0 || (size_t)used >= cap)
        return;
    char *rest = buf + used;
    size_t rest_cap = cap - (size_t)used;
    if (m == 0) {
        snprintf(rest, rest_cap, "0s");
    } else if (m < 1000) {
        snprintf(rest, rest_cap, "%lldms", (long long)m);
    } else if (m < 60000) {
        format_seconds(rest, rest_cap, m);
    } else {
        int64_t hours = m / 3600000, minutes = (m / 60000) % 60;
        int n = hours > 0 ? snprintf(rest, rest_cap, "%lldh%lldm", (long long)hours,
                                     (long long)minutes)
                          : snprintf(rest, rest_cap, "%lldm", (long long)minutes);
        if (n >= 0 && (size_t)n < rest_cap)
            format_seconds(rest + n, rest_cap - (size_t)n, m % 60000);
    }
}
