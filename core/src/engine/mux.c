/*
 * One multiplexed connection's protocol state (see mux.h): an output
 * buffer of encoded requests not yet written, and the line of operations
 * waiting for their replies, in the order their requests were queued.
 *
 * Positions are counted in bytes since the connection began (`queued` and
 * `written` only grow), so that an operation knows whether its whole
 * request went out however the driver splits its writes: its request ends
 * at `end`, and it was sent once written >= end.
 */
#include "engine/mux.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct waiting_op {
    void *op;
    uint64_t begin, end;   /* its request's bytes, as stream positions */
    size_t replies;        /* replies still to come (1 for one command) */
    bool cancelled;        /* its replies are dropped when they come */
} waiting_op;

struct vk_mux {
    vk_mux_done_fn done;
    vk_mux_drop_fn drop;   /* NULL: nobody is told of dropped operations */
    vk_mux_push_fn push;   /* NULL: pub/sub messages are not expected */
    void *userdata;
    vk_status failure;     /* VK_OK while the connection lives */

    /* Bytes not yet written: buf[start, start + len), which is stream
     * position `written` onwards. */
    char *buf;
    size_t start, len, cap;
    /* buf holds (or held) a password since it was last empty: no copy of
     * it may be left behind, so it is wiped, never given to realloc(). */
    bool secret;
    uint64_t written;      /* stream positions written so far */
    uint64_t queued;       /* stream positions queued so far */

    /* The line, a ring of `bound` entries: `count` from `head`. */
    waiting_op *line;
    size_t bound, head, count;

    redisReader *reader;
    vk_reply_budget budget;
};

static waiting_op *at(const vk_mux *m, size_t i)
{
    return &m->line[(m->head + i) % m->bound];
}

static void output_emptied(vk_mux *m);

vk_status vk__mux_new(vk_mux **out, size_t max_in_flight, vk_mux_done_fn done,
                      void *userdata)
{
    *out = NULL;
    if (max_in_flight == 0 || done == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "a mux needs an in-flight bound and a "
                                                 "completion function");
    vk_mux *m = calloc(1, sizeof *m);
    if (m == NULL)
        return vk__fail_nomem();
    m->line = calloc(max_in_flight, sizeof *m->line);
    m->reader = vk__reader_new();
    if (m->line == NULL || m->reader == NULL) {
        vk__mux_free(m);
        return vk__fail_nomem();
    }
    m->bound = max_in_flight;
    m->done = done;
    m->userdata = userdata;
    *out = m;
    return VK_OK;
}

void vk__mux_free(vk_mux *m)
{
    if (m == NULL)
        return;
    if (m->count > 0) {
        vk__fail(VK_ERR_IO, "connection closed");
        vk__mux_fail(m, VK_ERR_IO);
    }
    if (m->reader != NULL)
        redisReaderFree(m->reader);
    output_emptied(m);
    free(m->line);
    free(m->buf);
    free(m);
}

bool vk__mux_can_submit(const vk_mux *m)
{
    return m->failure == VK_OK && m->count < m->bound;
}

size_t vk__mux_in_flight(const vk_mux *m)
{
    return m->count;
}

vk_status vk__mux_status(const vk_mux *m)
{
    return m->failure;
}

/* Moves the unwritten bytes to the front; with a secret, what they leave
 * behind is wiped. */
static void compact(vk_mux *m)
{
    memmove(m->buf, m->buf + m->start, m->len);
    if (m->secret)
        vk__wipe(m->buf + m->len, m->start);
    m->start = 0;
}

/* Room for n more bytes after the unwritten ones; written bytes at the
 * front are dropped first. */
static bool reserve(vk_mux *m, size_t n)
{
    if (m->start > 0 && m->cap - m->start - m->len < n)
        compact(m);
    if (m->cap - m->start - m->len >= n)
        return true;
    if (n > SIZE_MAX / 2 - m->len)
        return false;
    size_t cap = m->cap * 2 > m->len + n ? m->cap * 2 : m->len + n;
    if (cap < 4096)
        cap = 4096;
    char *grown;
    if (m->secret) {
        grown = malloc(cap);
        if (grown != NULL && m->buf != NULL) {
            memcpy(grown, m->buf, m->len);
            vk__wipe(m->buf, m->cap);
            free(m->buf);
        }
    } else {
        grown = realloc(m->buf, cap);
    }
    if (grown == NULL)
        return false;
    m->buf = grown;
    m->cap = cap;
    return true;
}

/* The output is empty: a password it held is wiped now. */
static void output_emptied(vk_mux *m)
{
    if (m->secret) {
        vk__wipe(m->buf, m->cap);
        m->secret = false;
    }
    m->start = 0;
    m->len = 0;
}

/* The request of op, n bytes, is in place after the unwritten output. */
static void queue(vk_mux *m, void *op, size_t n, size_t replies)
{
    m->len += n;
    waiting_op *w = at(m, m->count++);
    *w = (waiting_op){ .op = op, .begin = m->queued, .end = m->queued + n, .replies = replies };
    m->queued += n;
}

void vk__mux_set_drop(vk_mux *m, vk_mux_drop_fn drop)
{
    m->drop = drop;
}

vk_status vk__mux_submit(vk_mux *m, void *op, int argc, const char *const *argv,
                         const size_t *argvlen)
{
    return vk__mux_submit_secret(m, op, argc, argv, argvlen, false);
}

vk_status vk__mux_submit_secret(vk_mux *m, void *op, int argc, const char *const *argv,
                                const size_t *argvlen, bool secret)
{
    if (m->failure != VK_OK)
        return vk__fail(m->failure, "the connection failed");
    if (m->count == m->bound)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "the connection has %zu requests in flight, "
                                                 "its bound", m->bound);
    size_t n;
    if (!vk__request_size(argc, argvlen, &n))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "request too large");
    /* Marked first, so that a buffer grown for this request is already
     * handled as one holding a password. */
    m->secret |= secret;
    if (!reserve(m, n))
        return vk__fail_nomem();
    vk__request_encode(m->buf + m->start + m->len, argc, argv, argvlen);
    queue(m, op, n, 1);
    return VK_OK;
}

vk_status vk__mux_submit_encoded(vk_mux *m, void *op, const char *bytes, size_t len,
                                 size_t replies, bool secret)
{
    if (m->failure != VK_OK)
        return vk__fail(m->failure, "the connection failed");
    if (m->count == m->bound)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "the connection has %zu requests in flight, "
                                                 "its bound", m->bound);
    if (replies == 0 || len == 0)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "an empty request");
    m->secret |= secret;
    if (!reserve(m, len))
        return vk__fail_nomem();
    memcpy(m->buf + m->start + m->len, bytes, len);
    queue(m, op, len, replies);
    return VK_OK;
}

const char *vk__mux_output(const vk_mux *m, size_t *len)
{
    *len = m->failure == VK_OK ? m->len : 0;
    return m->buf + m->start;
}

void vk__mux_wrote(vk_mux *m, size_t n)
{
    if (n > m->len)
        n = m->len;
    m->start += n;
    m->len -= n;
    m->written += n;
    if (m->len == 0)
        output_emptied(m);
}

/* Takes the first operation out of the line. */
static waiting_op pop(vk_mux *m)
{
    waiting_op w = m->line[m->head];
    m->head = (m->head + 1) % m->bound;
    m->count--;
    return w;
}

void vk__mux_set_push(vk_mux *m, vk_mux_push_fn push)
{
    m->push = push;
}

static bool first_word_is(const redisReply *r, const char *word)
{
    size_t n = strlen(word);
    return r->elements > 0 &&
           (r->element[0]->type == REDIS_REPLY_STRING ||
            r->element[0]->type == REDIS_REPLY_STATUS) &&
           r->element[0]->len == n && strncasecmp(r->element[0]->str, word, n) == 0;
}

/* A pub/sub message, as opposed to the reply of a request (SUBSCRIBE's
 * confirmations and a subscribed PING's "pong" are replies). */
static bool is_message(const redisReply *r)
{
#ifdef REDIS_REPLY_PUSH
    if (r->type == REDIS_REPLY_PUSH)
        return true;
#endif
    return r->type == REDIS_REPLY_ARRAY &&
           (first_word_is(r, "message") || first_word_is(r, "pmessage") ||
            first_word_is(r, "smessage"));
}

vk_status vk__mux_feed(vk_mux *m, const char *bytes, size_t len)
{
    if (m->failure != VK_OK)
        return vk__fail(m->failure, "the connection failed");
    if (redisReaderFeed(m->reader, bytes, len) != REDIS_OK) {
        vk__fail(VK_ERR_PROTOCOL, "%s", m->reader->errstr);
        vk__mux_fail(m, VK_ERR_PROTOCOL);
        return VK_ERR_PROTOCOL;
    }
    for (;;) {
        void *reply = NULL;
        if (vk__reader_get_reply(m->reader, &m->budget, &reply) != REDIS_OK) {
            if (m->budget.exceeded)
                vk__fail(VK_ERR_PROTOCOL, "reply with more than %zu array elements refused",
                         (size_t)VK_MAX_REPLY_ELEMENTS);
            else
                vk__fail(VK_ERR_PROTOCOL, "%s", m->reader->errstr);
            vk__mux_fail(m, VK_ERR_PROTOCOL);
            return VK_ERR_PROTOCOL;
        }
        if (reply == NULL)
            return VK_OK;
        if (m->push != NULL && is_message(reply)) {
            m->push(m->userdata, reply);
            if (m->failure != VK_OK)
                return VK_OK;
            continue;
        }
        if (m->count == 0) {
            vk__reply_free(reply);
            vk__fail(VK_ERR_PROTOCOL, "a reply that no request asked for");
            vk__mux_fail(m, VK_ERR_PROTOCOL);
            return VK_ERR_PROTOCOL;
        }
        /* Out of the line (at its last reply) before the completion runs:
         * it may submit or cancel on this mux. */
        waiting_op w = *at(m, 0);
        if (w.replies > 1)
            at(m, 0)->replies--;
        else
            pop(m);
        if (!w.cancelled)
            m->done(m->userdata, w.op, VK_OK, reply, true);
        else {
            vk__reply_free(reply);
            if (w.replies == 1 && m->drop != NULL)
                m->drop(m->userdata, w.op);
        }
        if (m->failure != VK_OK)
            return VK_OK;   /* a completion ended the connection */
    }
}

/* Removes the i-th operation, none of whose bytes were written, with its
 * bytes: the operations after it move up, in the line and in the stream. */
static void remove_unwritten(vk_mux *m, size_t i)
{
    waiting_op *w = at(m, i);
    size_t size = (size_t)(w->end - w->begin);
    size_t from = m->start + (size_t)(w->begin - m->written);
    size_t tail = m->len - (from - m->start) - size;
    memmove(m->buf + from, m->buf + from + size, tail);
    if (m->secret)
        vk__wipe(m->buf + from + tail, size);
    m->len -= size;
    m->queued -= size;
    for (size_t j = i; j + 1 < m->count; j++) {
        *at(m, j) = *at(m, j + 1);
        at(m, j)->begin -= size;
        at(m, j)->end -= size;
    }
    m->count--;
}

bool vk__mux_cancel(vk_mux *m, void *op)
{
    for (size_t i = 0; i < m->count; i++) {
        waiting_op *w = at(m, i);
        if (w->op != op || w->cancelled)
            continue;
        if (w->begin >= m->written && m->failure == VK_OK) {
            remove_unwritten(m, i);
            vk__fail(VK_ERR_CANCELLED, NULL);
            m->done(m->userdata, op, VK_ERR_CANCELLED, NULL, false);
        } else {
            /* Part of it is on the wire: its reply will come, and must be
             * read to keep the stream in step. */
            w->cancelled = true;
        }
        return true;
    }
    return false;
}

void vk__mux_fail(vk_mux *m, vk_status status)
{
    if (m->failure == VK_OK)
        m->failure = status;
    /* The detail of the failure, for each completion (they may record
     * others of their own). */
    char *detail = vk__error_dup();
    while (m->count > 0) {
        waiting_op w = pop(m);
        if (w.cancelled) {
            if (m->drop != NULL)
                m->drop(m->userdata, w.op);
            continue;
        }
        vk__fail_restore(m->failure, detail);
        m->done(m->userdata, w.op, m->failure, NULL, m->written >= w.end);
    }
    free(detail);
    output_emptied(m);
}
