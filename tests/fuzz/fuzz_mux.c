/*
 * Fuzzes the multiplexed connection's protocol state (mux.c) with what a
 * server could send: the first bytes choose how many requests are in line,
 * how many of their bytes were written and which operation is cancelled,
 * the rest is the stream, fed in pieces whose sizes the input also
 * chooses. Whatever comes, every operation must complete exactly once
 * (or, cancelled after it was written, never), each reply must go to the
 * next operation in line, and a refused stream must fail the mux, never
 * crash it or leak.
 */
#include "mux.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_OPS = 16 };

typedef struct tally {
    int completions[MAX_OPS];
    int next;              /* the operation whose reply comes next */
} tally;

static void on_done(void *userdata, void *op, vk_status status, redisReply *reply, bool sent)
{
    tally *t = userdata;
    int i = (int)(intptr_t)op;
    if (i < 0 || i >= MAX_OPS || t->completions[i]++ != 0)
        abort();   /* an operation completed twice, or one nobody submitted */
    if (status == VK_OK) {
        if (reply == NULL || !sent || i < t->next)
            abort();   /* a reply must go to the next one in line */
        t->next = i + 1;
        vk__reply_free(reply);
    } else if (reply != NULL) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    int ops = 1 + data[0] % MAX_OPS;
    size_t written_share = data[1];   /* of 255 */
    int cancel = data[2] % (MAX_OPS + 1);
    uint8_t split = data[3];
    data += 4;
    size -= 4;

    tally t = { { 0 }, 0 };
    vk_mux *m = NULL;
    if (vk__mux_new(&m, MAX_OPS, on_done, &t) != VK_OK)
        abort();
    const char *argv[] = { "GET", "key" };
    const size_t lens[] = { 3, 3 };
    for (int i = 0; i < ops; i++) {
        if (vk__mux_submit(m, (void *)(intptr_t)i, 2, argv, lens) != VK_OK)
            abort();
    }
    size_t out;
    vk__mux_output(m, &out);
    vk__mux_wrote(m, out * written_share / 255);
    if (cancel < ops)
        (void)vk__mux_cancel(m, (void *)(intptr_t)cancel);

    size_t at = 0;
    while (at < size && vk__mux_status(m) == VK_OK) {
        size_t piece = split == 0 ? size - at : 1 + (data[at] % split);
        if (piece > size - at)
            piece = size - at;
        (void)vk__mux_feed(m, (const char *)data + at, piece);
        at += piece;
    }
    vk__mux_free(m);
    for (int i = 0; i < ops; i++) {
        /* Cancelled after it was written: dropped, never completed; every
         * other operation exactly once. */
        if (t.completions[i] > 1)
            abort();
        if (t.completions[i] == 0 && i != cancel)
            abort();
    }
    return 0;
}
