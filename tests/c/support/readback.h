/*
 * Reading back from one node what a test's clients wrote there: one key,
 * or which of a numbered run of writes landed (where did each write of a
 * failover or migration test go).
 */
#ifndef VKTEST_READBACK_H
#define VKTEST_READBACK_H

#include "servers.h"

#include <stdbool.h>

/* The value of key on node (malloc'd), NULL when there is none. */
char *vkt_node_get(const vkt_server *node, const char *key);
/* For i in [0, count): does node hold key "<prefix><i>" with the value
 * "<i>"? A malloc'd array (count + 1 entries), read with one MGET per
 * batch of keys; NULL (and a failed check) when the node cannot be read. */
bool *vkt_keys_held(const vkt_server *node, const char *prefix, long count);

#endif
