/*
 * One internal connection (vk_conn) to a test server, for the tests that
 * look below the client: opened with a config prepared the way a client
 * prepares it, and commands given as NUL-terminated words.
 */
#ifndef VKTEST_CONNS_H
#define VKTEST_CONNS_H

#include "conn.h"

/* Opens a plain connection to address (standalone config, defaults).
 * *cfg receives the config the connection borrows: free it after closing
 * the connection. NULL (and a failed check) when it cannot. */
vk_conn *vkt_conn_open(const char *address, vk_config **cfg);
/* One command on the connection: its reply (free with vk__reply_free), or
 * NULL when the call failed. At most 16 words. */
redisReply *vkt_conn_run(vk_conn *c, int argc, const char *const *argv);

#endif
