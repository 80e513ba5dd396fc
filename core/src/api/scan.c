/*
 * Scans: the SCAN family as a cursor object that hands out one page at a
 * time. HSCAN, SSCAN and ZSCAN read one key and go wherever the key is. A
 * SCAN of the key space has one node to read in standalone and sentinel
 * mode; in cluster mode it walks every master of the slot map, one after
 * the other, each from cursor 0 until that master's cursor is 0 again.
 *
 * What a cluster walk guarantees is SCAN's own guarantee (a key present
 * for the whole walk is returned at least once) as long as the slot map
 * stays as it was when the walk began: the masters and which slots each
 * serves are captured with the first page. A page's reply counts only
 * when the map in service still matches that capture; when a slot changed
 * hands (a resharding, a failover) or a master left, the page fails with
 * VK_ERR_IO instead of walking on: keys could have moved from a master not
 * read yet to one already read and be skipped without a word. The caller
 * starts a new walk.
 *
 * This file holds what every scan shares and the blocking scan;
 * scan_driven.c the event-loop and bytes-mode one.
 */
#include "api/scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static vk_status invalid_scan(const char *function)
{
    vk__misuse(function, "scan is nil");
    return vk__fail(VK_ERR_INVALID_ARGUMENT, "scan is nil");
}

static char *copy_bytes(const char *bytes, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy != NULL) {
        if (len > 0)
            memcpy(copy, bytes, len);
        copy[len] = '\0';
    }
    return copy;
}

vk_status vk__scan_alloc(vk_scan **out, const char *command, const char *key, size_t keylen,
                         const char *match, size_t matchlen, int64_t count, const char *type)
{
    if (count < 0)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "scan count cannot be negative");
    if (type != NULL && type[0] == '\0')
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "scan type cannot be empty");
    if (match == NULL && matchlen != 0)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "scan match is NULL with a length");
    vk_scan *s = calloc(1, sizeof *s);
    if (s == NULL)
        return vk__fail_nomem();
    snprintf(s->command, sizeof s->command, "%s", command);
    strcpy(s->cursor, "0");
    if (count > 0)
        snprintf(s->count, sizeof s->count, "%lld", (long long)count);
    bool nomem = false;
    if (key != NULL) {
        s->keylen = keylen;
        nomem |= (s->key = copy_bytes(key, keylen)) == NULL;
    }
    if (match != NULL) {
        s->matchlen = matchlen;
        nomem |= (s->match = copy_bytes(match, matchlen)) == NULL;
    }
    if (type != NULL)
        nomem |= (s->type = copy_bytes(type, strlen(type))) == NULL;
    if (nomem) {
        vk__scan_release(s);
        return vk__fail_nomem();
    }
    *out = s;
    return VK_OK;
}

vk_status vk__scan_key_command(const char *command, const char *key, size_t keylen,
                               char upper[6])
{
    if (command == NULL ||
        (strcasecmp(command, "HSCAN") != 0 && strcasecmp(command, "SSCAN") != 0 &&
         strcasecmp(command, "ZSCAN") != 0))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "scan command must be HSCAN, SSCAN or ZSCAN");
    if (key == NULL && keylen != 0)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "scan key is NULL with a length");
    for (size_t i = 0; i < 6; i++)
        upper[i] = (char)(command[i] >= 'a' && command[i] <= 'z' ? command[i] - 32 : command[i]);
    return VK_OK;
}

void vk__scan_release(vk_scan *s)
{
    if (s->plan != NULL)
        free(s->plan->nodes);
    free(s->plan);
    free(s->key);
    free(s->match);
    free(s->type);
    free(s);
}

VK_API vk_status vk_scan_new(vk_scan **out, vk_client *client, const char *match,
                             size_t matchlen, int64_t count, const char *type)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (client == NULL || !vk__client_alive(client)) {
        vk__misuse("vk_scan_new", "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    vk_scan *s;
    vk_status st = vk__scan_alloc(&s, "SCAN", NULL, 0, match, matchlen, count, type);
    if (st != VK_OK)
        return st;
    s->client = vk__client_ref(client);
    s->walk = client->cluster != NULL;
    *out = s;
    return VK_OK;
}

VK_API vk_status vk_scan_new_key(vk_scan **out, vk_client *client, const char *command,
                                 const char *key, size_t keylen, const char *match,
                                 size_t matchlen, int64_t count)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (client == NULL || !vk__client_alive(client)) {
        vk__misuse("vk_scan_new_key", "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    char upper[6];
    vk_scan *s;
    vk_status st = vk__scan_key_command(command, key, keylen, upper);
    if (st == VK_OK)
        st = vk__scan_alloc(&s, upper, key != NULL ? key : "", keylen, match, matchlen, count,
                            NULL);
    if (st != VK_OK)
        return st;
    s->client = vk__client_ref(client);
    *out = s;
    return VK_OK;
}

VK_API void vk_scan_free(vk_scan *scan)
{
    if (scan == NULL)
        return;
    if (scan->client == NULL) {
        vk__scan_driven_free(scan);
        return;
    }
    vk__client_unref(scan->client);
    vk__scan_release(scan);
}

VK_API int vk_scan_done(const vk_scan *scan)
{
    return scan == NULL || scan->done;
}

int vk__scan_argv(const vk_scan *s, const char *argv[VK_SCAN_ARGS],
                  size_t argvlen[VK_SCAN_ARGS])
{
    int argc = 0;
#define ARG(p, n) (argv[argc] = (p), argvlen[argc++] = (n))
    ARG(s->command, strlen(s->command));
    if (s->key != NULL)
        ARG(s->key, s->keylen);
    ARG(s->cursor, strlen(s->cursor));
    if (s->match != NULL) {
        ARG("MATCH", 5);
        ARG(s->match, s->matchlen);
    }
    if (s->count[0] != '\0') {
        ARG("COUNT", 5);
        ARG(s->count, strlen(s->count));
    }
    if (s->type != NULL) {
        ARG("TYPE", 4);
        ARG(s->type, strlen(s->type));
    }
#undef ARG
    return argc;
}

/* ---- the cluster walk's plan ------------------------------------------------------- */

vk_status vk__scan_capture(vk_scan *s, const vk_slot_map *m, uint64_t version)
{
    vk_scan_plan *plan = calloc(1, sizeof *plan);
    /* Map node index -> walk index + 1, for the nodes that serve a slot. */
    uint16_t *index = calloc(m->node_count + 1, sizeof *index);
    if (plan == NULL || index == NULL ||
        (plan->nodes = calloc(m->node_count + 1, sizeof *plan->nodes)) == NULL) {
        free(index);
        free(plan);
        return vk__fail_nomem();
    }
    plan->version = version;
    for (size_t slot = 0; slot < VK_CLUSTER_SLOTS; slot++) {
        int owner = m->owner[slot];
        if (owner == 0)
            continue;
        if (index[owner - 1] == 0) {
            plan->nodes[plan->count] = m->nodes[owner - 1].endpoint;
            index[owner - 1] = (uint16_t)++plan->count;
        }
        plan->owner[slot] = index[owner - 1];
    }
    free(index);
    s->plan = plan;
    if (plan->count == 0)
        s->done = true;   /* no master serves a slot: nothing to read */
    return VK_OK;
}

const vk_endpoint *vk__scan_node(const vk_scan *s)
{
    if (!s->walk || s->plan == NULL || s->node >= s->plan->count)
        return NULL;
    return &s->plan->nodes[s->node];
}

/* Fails (VK_ERR_IO, naming the first slot that differs) when m no longer
 * assigns every slot to the master it had at the start. */
static vk_status check_plan(vk_scan *s, const vk_slot_map *m, uint64_t version)
{
    vk_scan_plan *plan = s->plan;
    if (m == NULL)
        return vk__fail_msg(VK_ERR_IO, "redis cluster: not connected");
    if (version == plan->version)
        return VK_OK;
    /* Map node index -> walk index + 1 (0: a node the walk does not know). */
    uint16_t *index = calloc(m->node_count + 1, sizeof *index);
    if (index == NULL)
        return vk__fail_nomem();
    for (size_t i = 0; i < m->node_count; i++) {
        for (size_t k = 0; k < plan->count; k++) {
            if (vk__endpoint_equal(&m->nodes[i].endpoint, &plan->nodes[k]))
                index[i] = (uint16_t)(k + 1);
        }
    }
    vk_status st = VK_OK;
    for (size_t slot = 0; slot < VK_CLUSTER_SLOTS; slot++) {
        int owner = m->owner[slot];
        uint16_t now = owner > 0 ? index[owner - 1] : 0;
        if (owner > 0 && now == 0 && plan->owner[slot] == 0)
            now = UINT16_MAX;   /* a slot unserved at the start went to a new node */
        if (now == plan->owner[slot])
            continue;
        char was[300] = "no master", is[300] = "no master";
        if (plan->owner[slot] > 0)
            vk__format_endpoint(was, sizeof was, &plan->nodes[plan->owner[slot] - 1]);
        if (owner > 0)
            vk__format_endpoint(is, sizeof is, &m->nodes[owner - 1].endpoint);
        st = vk__fail_msg(VK_ERR_IO,
                          "redis cluster: scan: the slot map changed during the walk (slot "
                          "%zu moved from %s to %s); start the walk again",
                          slot, was, is);
        break;
    }
    free(index);
    if (st == VK_OK)
        plan->version = version;
    return st;
}

/* ---- one page ----------------------------------------------------------------------- */

vk_status vk__scan_take(vk_scan *s, redisReply *r, const vk_slot_map *m, uint64_t version,
                        redisReply **items)
{
    *items = NULL;
    if (r->type == REDIS_REPLY_ERROR)
        return vk__fail(VK_ERR_SERVER, "%s: %.*s", s->command, (int)r->len, r->str);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        (r->element[0]->type != REDIS_REPLY_STRING && r->element[0]->type != REDIS_REPLY_STATUS) ||
        r->element[0]->len == 0 || r->element[0]->len >= VK_SCAN_CURSOR_MAX ||
        (r->element[1]->type != REDIS_REPLY_ARRAY
#if HIREDIS_MAJOR >= 1
         && r->element[1]->type != REDIS_REPLY_SET
#endif
         ))
        return vk__fail(VK_ERR_PROTOCOL, "%s: the reply is not [cursor, [items]]", s->command);
    /* The page counts only if the map still is the one the walk began with. */
    if (s->walk) {
        vk_status st = check_plan(s, m, version);
        if (st != VK_OK)
            return st;
    }
    char cursor[VK_SCAN_CURSOR_MAX];
    memcpy(cursor, r->element[0]->str, r->element[0]->len);
    cursor[r->element[0]->len] = '\0';
    *items = r->element[1];
    r->element[1] = NULL;   /* detached: vk__reply_free skips it */
    (*items)->type = REDIS_REPLY_ARRAY;
    if (strcmp(cursor, "0") != 0) {
        memcpy(s->cursor, cursor, sizeof cursor);
    } else if (s->walk && s->node + 1 < s->plan->count) {
        s->node++;               /* this master is done: the next one, from 0 */
        strcpy(s->cursor, "0");
    } else {
        s->done = true;
    }
    return VK_OK;
}

/* ---- the blocking scan ---------------------------------------------------------------- */

/* Captures the masters serving slots in the cluster's map in service. */
static vk_status capture_blocking(vk_scan *s, vk_context *ctx)
{
    vk_status st = vk__client_ensure_connected(s->client, ctx);
    if (st != VK_OK)
        return st;
    uint64_t version;
    vk_slot_map *m = vk__cluster_map(s->client->cluster, &version);
    if (m == NULL)
        return vk__fail_msg(VK_ERR_IO, "redis cluster: not connected");
    st = vk__scan_capture(s, m, version);
    vk__slot_map_unref(m);
    return st;
}

static vk_status empty_page(vk_reply **out)
{
    redisReply *empty = vk__array_reply_new(0);
    if (empty == NULL)
        return vk__fail_nomem();
    *out = (vk_reply *)empty;
    return VK_OK;
}

VK_API vk_status vk_scan_next(vk_reply **out, vk_scan *s, vk_context *ctx)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (s == NULL)
        return invalid_scan("vk_scan_next");
    if (s->client == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT,
                        "an event-loop client's scan runs with vk_async_scan_next or "
                        "vk_hosted_scan_next");
    if (!vk__client_alive(s->client)) {
        vk__misuse("vk_scan_next", "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    vk__client_check_fork(s->client);
    vk_status st;
    if (!s->done && s->walk && s->plan == NULL && (st = capture_blocking(s, ctx)) != VK_OK)
        return st;
    if (s->done)
        return empty_page(out);

    const char *argv[VK_SCAN_ARGS];
    size_t argvlen[VK_SCAN_ARGS];
    int argc = vk__scan_argv(s, argv, argvlen);
    redisReply *r = NULL;
    st = vk__client_command_at(&r, s->client, ctx, argc, argv, argvlen, vk__scan_node(s));
    if (st != VK_OK)
        return st;
    uint64_t version = 0;
    vk_slot_map *m = s->walk ? vk__cluster_map(s->client->cluster, &version) : NULL;
    redisReply *items;
    st = vk__scan_take(s, r, m, version, &items);
    vk__slot_map_unref(m);
    vk__reply_free(r);
    if (st == VK_OK)
        *out = (vk_reply *)items;
    return st;
}
