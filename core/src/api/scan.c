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
 * serves are captured with the first page. Every later page compares the
 * map in service with that capture, and when a slot changed hands (a
 * resharding, a failover) or a master left, the page fails with VK_ERR_IO
 * instead of walking on: keys could have moved from a master not read yet
 * to one already read and be skipped without a word. The caller starts a
 * new walk.
 */
#include "api/client.h"
#include "topology/cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The largest cursor: an unsigned 64-bit decimal (20 digits). */
#define CURSOR_MAX 24

/* The masters of the map a cluster walk began with. */
typedef struct scan_plan {
    vk_endpoint *nodes;         /* the masters serving slots, in walk order */
    size_t count;
    uint16_t owner[VK_CLUSTER_SLOTS];   /* slot -> index in nodes + 1; 0: none */
    uint64_t version;           /* the version of the map last found equal */
} scan_plan;

struct vk_scan {
    vk_client *client;          /* a reference: the scan may outlive vk_client_free */
    char command[6];            /* SCAN, HSCAN, SSCAN or ZSCAN */
    char *key;                  /* NULL for SCAN */
    size_t keylen;
    char *match;                /* NULL: no MATCH */
    size_t matchlen;
    char count[24];             /* "" : no COUNT */
    char *type;                 /* NULL: no TYPE */
    char cursor[CURSOR_MAX];
    bool done;
    scan_plan *plan;            /* cluster SCAN: captured by the first page */
    size_t node;                /* cluster SCAN: the master being read */
};

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

/* The checks and copies both constructors share. */
static vk_status scan_new(vk_scan **out, vk_client *client, const char *function,
                          const char *command, const char *key, size_t keylen,
                          const char *match, size_t matchlen, int64_t count,
                          const char *type)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (client == NULL || !vk__client_alive(client)) {
        vk__misuse(function, "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
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
        free(s->key);
        free(s->match);
        free(s->type);
        free(s);
        return vk__fail_nomem();
    }
    s->client = vk__client_ref(client);
    *out = s;
    return VK_OK;
}

VK_API vk_status vk_scan_new(vk_scan **out, vk_client *client, const char *match,
                             size_t matchlen, int64_t count, const char *type)
{
    return scan_new(out, client, "vk_scan_new", "SCAN", NULL, 0, match, matchlen, count, type);
}

VK_API vk_status vk_scan_new_key(vk_scan **out, vk_client *client, const char *command,
                                 const char *key, size_t keylen, const char *match,
                                 size_t matchlen, int64_t count)
{
    if (out != NULL)
        *out = NULL;
    if (command == NULL ||
        (strcasecmp(command, "HSCAN") != 0 && strcasecmp(command, "SSCAN") != 0 &&
         strcasecmp(command, "ZSCAN") != 0))
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "scan command must be HSCAN, SSCAN or ZSCAN");
    if (key == NULL && keylen != 0)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "scan key is NULL with a length");
    char upper[6];
    for (size_t i = 0; i < sizeof upper; i++)
        upper[i] = (char)(command[i] >= 'a' && command[i] <= 'z' ? command[i] - 32 : command[i]);
    return scan_new(out, client, "vk_scan_new_key", upper, key != NULL ? key : "", keylen,
                    match, matchlen, count, NULL);
}

VK_API void vk_scan_free(vk_scan *scan)
{
    if (scan == NULL)
        return;
    if (scan->plan != NULL)
        free(scan->plan->nodes);
    free(scan->plan);
    free(scan->key);
    free(scan->match);
    free(scan->type);
    vk__client_unref(scan->client);
    free(scan);
}

VK_API int vk_scan_done(const vk_scan *scan)
{
    return scan == NULL || scan->done;
}

/* ---- the cluster walk's plan ------------------------------------------------------- */

static vk_status not_connected(void)
{
    return vk__fail_msg(VK_ERR_IO, "redis cluster: not connected");
}

/* Captures the masters that serve slots in the map in service. */
static vk_status capture_plan(vk_scan *s, vk_context *ctx)
{
    vk_status st = vk__client_ensure_connected(s->client, ctx);
    if (st != VK_OK)
        return st;
    scan_plan *plan = calloc(1, sizeof *plan);
    if (plan == NULL)
        return vk__fail_nomem();
    vk_slot_map *m = vk__cluster_map(s->client->cluster, &plan->version);
    if (m == NULL) {
        free(plan);
        return not_connected();
    }
    /* Map node index -> walk index + 1, for the nodes that serve a slot. */
    uint16_t *index = calloc(m->node_count + 1, sizeof *index);
    plan->nodes = calloc(m->node_count + 1, sizeof *plan->nodes);
    if (index == NULL || plan->nodes == NULL) {
        free(index);
        free(plan->nodes);
        free(plan);
        vk__slot_map_unref(m);
        return vk__fail_nomem();
    }
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
    vk__slot_map_unref(m);
    s->plan = plan;
    return VK_OK;
}

/* Fails (VK_ERR_IO, naming the first slot that differs) when the map in
 * service no longer assigns every slot to the master it had at the start. */
static vk_status check_plan(vk_scan *s)
{
    scan_plan *plan = s->plan;
    uint64_t version;
    vk_slot_map *m = vk__cluster_map(s->client->cluster, &version);
    if (m == NULL)
        return not_connected();
    if (version == plan->version) {
        vk__slot_map_unref(m);
        return VK_OK;
    }
    /* Map node index -> walk index + 1 (0: a node the walk does not know). */
    uint16_t *index = calloc(m->node_count + 1, sizeof *index);
    if (index == NULL) {
        vk__slot_map_unref(m);
        return vk__fail_nomem();
    }
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
    vk__slot_map_unref(m);
    if (st == VK_OK)
        plan->version = version;
    return st;
}

/* ---- one page ----------------------------------------------------------------------- */

/* The page's keys out of a [cursor, [items]] reply, and the cursor. */
static vk_status take_page(vk_scan *s, redisReply *r, redisReply **items, char *cursor)
{
    if (r->type == REDIS_REPLY_ERROR)
        return vk__fail(VK_ERR_SERVER, "%s: %.*s", s->command, (int)r->len, r->str);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        (r->element[0]->type != REDIS_REPLY_STRING && r->element[0]->type != REDIS_REPLY_STATUS) ||
        r->element[0]->len == 0 || r->element[0]->len >= CURSOR_MAX ||
        r->element[1]->type != REDIS_REPLY_ARRAY
#if HIREDIS_MAJOR >= 1
        && r->element[1]->type != REDIS_REPLY_SET && r->element[1]->type != REDIS_REPLY_MAP
#endif
    )
        return vk__fail(VK_ERR_PROTOCOL, "%s: the reply is not [cursor, [items]]", s->command);
    memcpy(cursor, r->element[0]->str, r->element[0]->len);
    cursor[r->element[0]->len] = '\0';
    *items = r->element[1];
    r->element[1] = NULL;   /* detached: vk__reply_free skips it */
    (*items)->type = REDIS_REPLY_ARRAY;
    return VK_OK;
}

VK_API vk_status vk_scan_next(vk_reply **out, vk_scan *s, vk_context *ctx)
{
    if (out == NULL)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "out is NULL");
    *out = NULL;
    if (s == NULL)
        return invalid_scan("vk_scan_next");
    if (!vk__client_alive(s->client)) {
        vk__misuse("vk_scan_next", "redis client is nil");
        return vk__fail(VK_ERR_NIL_CLIENT, NULL);
    }
    if (s->done) {
        redisReply *empty = vk__array_reply_new(0);
        if (empty == NULL)
            return vk__fail_nomem();
        *out = (vk_reply *)empty;
        return VK_OK;
    }
    vk__client_check_fork(s->client);
    bool walk = s->client->cluster != NULL && s->key == NULL;
    vk_status st;
    if (walk && s->plan == NULL && (st = capture_plan(s, ctx)) != VK_OK)
        return st;

    const char *argv[9];
    size_t argvlen[9];
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

    redisReply *r = NULL;
    if (walk && s->plan->count == 0) {
        s->done = true;   /* no master serves a slot: nothing to read */
        r = NULL;
    } else {
        st = vk__client_command_at(&r, s->client, ctx, argc, argv, argvlen,
                                   walk ? &s->plan->nodes[s->node] : NULL);
        if (st != VK_OK)
            return st;
    }
    redisReply *items = NULL;
    char cursor[CURSOR_MAX] = "0";
    st = r != NULL ? take_page(s, r, &items, cursor) : VK_OK;
    vk__reply_free(r);
    /* The page counts only if the map still is the one the walk began with. */
    if (st == VK_OK && walk && s->plan->count > 0)
        st = check_plan(s);
    if (st == VK_OK && items == NULL && (items = vk__array_reply_new(0)) == NULL)
        st = vk__fail_nomem();
    if (st != VK_OK) {
        vk__reply_free(items);
        return st;
    }
    if (strcmp(cursor, "0") != 0) {
        memcpy(s->cursor, cursor, sizeof cursor);
    } else if (walk && s->node + 1 < s->plan->count) {
        s->node++;               /* this master is done: the next one, from 0 */
        strcpy(s->cursor, "0");
    } else {
        s->done = true;
    }
    *out = (vk_reply *)items;
    return VK_OK;
}
