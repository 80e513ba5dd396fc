/*
 * Fuzzes the engine through the bytes mode (vk_hosted): the host of this
 * target opens the connection at once, writes everything the client wants
 * written, and gives it what a server could send, in pieces whose sizes
 * the input chooses. The first bytes choose how many commands and
 * pipelines are queued, which one is cancelled and when the connection is
 * lost. Whatever comes, every operation completes exactly once (at the
 * latest when the client is freed), a reply only with VK_OK, and nothing
 * crashes or leaks.
 */
#include "vkclient_async.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_OPS = 16 };

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

/* Writes what the client wants written; opens the connection it wants. */
static void serve_wants(vk_hosted *c)
{
    vk_hosted_wants w;
    for (int rounds = 0; rounds < 8; rounds++) {
        if (vk_hosted_get_wants(c, 0, &w) != VK_OK)
            return;
        if (w.connect)
            vk_hosted_connected(c, w.conn);
        else if (w.output_len > 0)
            vk_hosted_wrote(c, w.conn, w.output_len);
        else
            return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    int commands = 1 + data[0] % MAX_OPS;
    int cancel = data[1] % (MAX_OPS + 1);      /* MAX_OPS: none */
    size_t lose_at = data[2];                   /* the piece after which the connection is lost */
    int max_piece = 1 + data[3] % 64;
    data += 4;
    size -= 4;

    vk_config *cfg = NULL;
    if (vk_config_new(&cfg) != VK_OK)
        return 0;
    vk_config_set_standalone(cfg, "127.0.0.1:6379");
    vk_config_set_max_retries(cfg, 1);
    vk_hosted *c = NULL;
    if (vk_hosted_new(&c, cfg) != VK_OK) {
        vk_config_free(cfg);
        return 0;
    }
    vk_config_free(cfg);
    memset(completions, 0, sizeof completions);

    uint64_t ids[MAX_OPS] = {0};
    vk_pipeline *p = NULL;
    vk_hosted_pipeline_new(&p, c);
    for (int i = 0; i < commands; i++) {
        void *ud = (void *)(intptr_t)i;
        static const char *get[] = {"GET", "k"};
        static const size_t get_len[] = {3, 1};
        static const char *blpop[] = {"BLPOP", "k", "0"};
        static const size_t blpop_len[] = {5, 1, 1};
        vk_status st;
        if (i % 5 == 4) {
            vk_pipeline_append(p, 2, get, get_len);
            vk_pipeline_append(p, 3, blpop, blpop_len);
            st = vk_hosted_pipeline_exec(p, on_reply, ud, &ids[i]);
        } else if (i % 7 == 6) {
            st = vk_hosted_command(c, 3, blpop, blpop_len, on_reply, ud, &ids[i]);
        } else {
            st = vk_hosted_command(c, 2, get, get_len, on_reply, ud, &ids[i]);
        }
        if (st != VK_OK)
            completions[i] = 1;   /* refused: no completion comes */
    }
    size_t pieces = 0;
    while (size > 0) {
        serve_wants(c);
        vk_hosted_wants w = {0};
        vk_hosted_get_wants(c, 0, &w);
        size_t n = (size_t)(1 + (data[0] % max_piece));
        if (n > size)
            n = size;
        if (w.read)
            vk_hosted_received(c, w.conn, (const char *)data, n);
        data += n;
        size -= n;
        if (++pieces == lose_at)
            vk_hosted_lost(c, w.conn, VK_ERR_IO, "EOF");
        if (pieces == 2 && cancel < commands && ids[cancel] != 0)
            vk_hosted_cancel(c, ids[cancel]);
        if (vk_hosted_tick_in_ms(c) == 0)
            vk_hosted_tick(c);
    }
    vk_pipeline_free(p);
    vk_hosted_free(c);
    for (int i = 0; i < commands; i++)
        if (completions[i] != 1)
            abort();   /* an operation never completed */
    return 0;
}
