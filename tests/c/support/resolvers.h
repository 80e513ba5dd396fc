/*
 * A resolver that never answers, for tests of name lookups bounded by
 * their deadlines (test_dns_bound, test_async_dns).
 */
#ifndef VKTEST_RESOLVERS_H
#define VKTEST_RESOLVERS_H

#include <stdbool.h>

/* Moves this process into a private mount namespace (root only) and points
 * its /etc/resolv.conf at a loopback UDP socket that accepts queries and
 * never answers: getaddrinfo() then waits out its 30 s timeout for any
 * name that is not in /etc/hosts. Call it in a child process: the
 * namespace and the lookups left waiting end with it. */
bool vkt_stall_resolver(void);

/* A name only the stalled resolver is asked about. */
#define VKT_STALLED_HOST "stalled.vk-test.invalid"

#endif
