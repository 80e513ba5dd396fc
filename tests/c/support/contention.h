/*
 * The mutual-exclusion check every topology's lock test runs: threads take
 * one lock key in turn and bump a counter that is only safe under the lock.
 */
#ifndef VKTEST_CONTENTION_H
#define VKTEST_CONTENTION_H

#include <vkclient.h>

typedef struct vkt_contention {
    long counter;           /* equals threads * rounds when nothing was lost */
    int overlaps;           /* times two holders were inside at once */
    int token_regressions;  /* fencing tokens that did not grow */
    int failures;           /* with_lock calls that failed (printed) */
} vkt_contention;

/* Runs threads × rounds with_lock calls on key (patient options: 1000
 * tries, 2 ms apart) and reports what the critical sections saw. */
void vkt_run_contention(vk_lock_manager *manager, const char *key, int threads, int rounds,
                        vkt_contention *out);

#endif
