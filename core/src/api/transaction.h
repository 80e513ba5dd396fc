/*
 * Transactions (transaction.c): the MULTI and EXEC that frame a
 * transaction pipeline, and what the replies to such a frame mean. Used
 * by pipelines (pipeline.c) and sessions (session.c).
 */
#ifndef VK_TRANSACTION_H
#define VK_TRANSACTION_H

#include "proto/proto.h"

#include <hiredis/hiredis.h>

/* The encoded requests sent before and after a transaction's commands. */
extern const char vk__multi_request[];
extern const char vk__exec_request[];
#define VK_MULTI_REQUEST_LEN 15   /* *1\r\n$5\r\nMULTI\r\n */
#define VK_EXEC_REQUEST_LEN 14    /* *1\r\n$4\r\nEXEC\r\n */

/* The outcome of a transaction from its replies: replies holds MULTI's,
 * then one per queued command, then EXEC's (count + 2 elements). On
 * success *out takes EXEC's array (removed from replies). A nil EXEC (a
 * watched key changed) is VK_ERR_WATCH_CONFLICT; a MULTI refused, or an
 * EXEC that discarded the transaction (EXECABORT: a command was refused
 * when queued), is VK_ERR_SERVER naming the first refusal. *ended tells
 * whether the connection is surely out of the transaction (and out of
 * WATCH) on the server. */
vk_status vk__transaction_result(redisReply *replies, redisReply **out, bool *ended);

/* True for the nil reply of an EXEC whose transaction was aborted. */
bool vk__exec_aborted(const redisReply *r);

#endif /* VK_TRANSACTION_H */
