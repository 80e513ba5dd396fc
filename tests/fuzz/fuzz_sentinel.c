/*
 * Fuzzes Sentinel mode through the bytes mode (vk_hosted): the client asks
 * its sentinels (two configured) for the master on probe connections, then
 * connects to the node it was given, and every one of those connections
 * gets what a server could send, in pieces the input chooses, on the
 * connection the input chooses (the first or the last one that reads).
 * The first bytes choose how many commands are queued, which connects
 * fail and when a connection is lost. Whatever comes, every operation
 * completes exactly once (at the latest when the client is freed), a reply
 * only with VK_OK, and nothing crashes or leaks.
 */
#include "vkclient_async.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_OPS = 8 };

static int completions[MAX_OPS];

static void on_reply(void *userdata, vk_status status, vk_reply *reply)
{
    int i = (int)(intptr_t)userdata;
    if (i < 0 || i >= MAX_OPS || completions[i]++ != 0)
        abort();   /* completed twice, or never submitted */
    if ((status == VK_OK) != (reply != NULL))
        abort();
    vk_reply_free(reply);
}

/* Opens (or fails, by the bits of fail_mask) and writes for every
 * connection the client wants. */
static void serve_wants(vk_hosted *c, unsigned *fail_mask)
{
    for (int rounds = 0; rounds < 16; rounds++) {
        bool acted = false;
        size_t n = vk_hosted_connection_count(c);
        for (size_t i = 0; i < n && !acted; i++) {
            vk_hosted_wants w;
            if (vk_hosted_get_wants(c, i, &w) != VK_OK)
                abort();   /* the count said it exists */
            if (w.connect) {
                if (*fail_mask & 1)
                    vk_hosted_connect_failed(c, w.conn, VK_ERR_IO, "connection refused");
                else
                    vk_hosted_connected(c, w.conn);
                *fail_mask >>= 1;
                acted = true;
            } else if (w.output_len > 0) {
                vk_hosted_wrote(c, w.conn, w.output_len);
                acted = true;
            }
        }
        if (!acted)
            return;
    }
}

/* The id of the first (or last) connection that reads, 0: none. */
static uint64_t reader(vk_hosted *c, bool last)
{
    uint64_t found = 0;
    size_t n = vk_hosted_connection_count(c);
    for (size_t i = 0; i < n; i++) {
        vk_hosted_wants w;
        if (vk_hosted_get_wants(c, i, &w) == VK_OK && w.read) {
            found = w.conn;
            if (!last)
                break;
        }
    }
    return found;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    int commands = 1 + data[0] % MAX_OPS;
    unsigned fail_mask = data[1];               /* which connects fail, in turn */
    size_t lose_at = data[2];                   /* the piece after which a connection is lost */
    int max_piece = 1 + data[3] % 64;
    data += 4;
    size -= 4;

    vk_config *cfg = NULL;
    if (vk_config_new(&cfg) != VK_OK)
        return 0;
    vk_config_set_sentinel(cfg, "mymaster");
    vk_config_add_sentinel_address(cfg, "127.0.0.1:26379");
    vk_config_add_sentinel_address(cfg, "127.0.0.1:26380");
    vk_config_set_max_retries(cfg, 1);
    vk_hosted *c = NULL;
    if (vk_hosted_new(&c, cfg) != VK_OK) {
        vk_config_free(cfg);
        return 0;
    }
    vk_config_free(cfg);
    memset(completions, 0, sizeof completions);

    for (int i = 0; i < commands; i++) {
        static const char *set[] = {"SET", "k", "v"};
        static const size_t set_len[] = {3, 1, 1};
        if (vk_hosted_command(c, 3, set, set_len, on_reply, (void *)(intptr_t)i, NULL) != VK_OK)
            completions[i] = 1;   /* refused: no completion comes */
    }
    size_t pieces = 0;
    while (size > 0) {
        serve_wants(c, &fail_mask);
        bool last = data[0] & 1;
        size_t n = (size_t)(1 + ((data[0] >> 1) % max_piece));
        data++;
        size--;
        if (n > size)
            n = size;
        uint64_t conn = reader(c, last);
        if (conn != 0 && n > 0)
            vk_hosted_received(c, conn, (const char *)data, n);
        data += n;
        size -= n;
        if (++pieces == lose_at && (conn = reader(c, last)) != 0)
            vk_hosted_lost(c, conn, VK_ERR_IO, "EOF");
        if (vk_hosted_tick_in_ms(c) == 0)
            vk_hosted_tick(c);
    }
    vk_hosted_free(c);
    for (int i = 0; i < commands; i++)
        if (completions[i] != 1)
            abort();   /* an operation never completed */
    return 0;
}
