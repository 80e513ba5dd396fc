/*
 * Cluster key hashing (CRC16/XMODEM modulo 16384, with hash tags) and the
 * slot map: which master serves which slot, as a cluster node reports it in
 * CLUSTER SHARDS (or CLUSTER SLOTS on servers without it).
 */
#include "topology/cluster.h"

#include <stdlib.h>
#include <string.h>

/* ---- hashing ------------------------------------------------------------------ */

/* CRC16 with polynomial 0x1021, initial value 0: the variant the cluster
 * specification names (XMODEM). */
static const uint16_t crc16_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,
};

static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)((crc << 8) ^ crc16_table[((crc >> 8) ^ (uint8_t)buf[i]) & 0xff]);
    return crc;
}

unsigned vk__cluster_key_slot(const char *key, size_t len)
{
    const char *open = len > 0 ? memchr(key, '{', len) : NULL;
    if (open != NULL) {
        size_t start = (size_t)(open - key) + 1;
        const char *close = memchr(key + start, '}', len - start);
        /* "{}" hashes the whole key, as the server does. */
        if (close != NULL && close > key + start) {
            key += start;
            len = (size_t)(close - key);
        }
    }
    return crc16(key, len) & (VK_CLUSTER_SLOTS - 1);
}

/* ---- the map ------------------------------------------------------------------- */

static vk_slot_map *map_alloc(size_t node_cap)
{
    vk_slot_map *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    m->node_cap = node_cap > 0 ? node_cap : 4;
    m->nodes = calloc(m->node_cap, sizeof *m->nodes);
    if (m->nodes == NULL) {
        free(m);
        return NULL;
    }
    atomic_init(&m->refs, 1);
    return m;
}

vk_slot_map *vk__slot_map_ref(vk_slot_map *m)
{
    if (m != NULL)
        atomic_fetch_add(&m->refs, 1);
    return m;
}

void vk__slot_map_unref(vk_slot_map *m)
{
    if (m == NULL || atomic_fetch_sub(&m->refs, 1) != 1)
        return;
    for (size_t i = 0; i < m->node_count; i++)
        vk__pool_unref(atomic_load(&m->nodes[i].pool));
    free(m->nodes);
    free(m);
}

vk_slot_map *vk__slot_map_copy(const vk_slot_map *m)
{
    vk_slot_map *copy = map_alloc(m->node_count + 1);
    if (copy == NULL)
        return NULL;
    for (size_t i = 0; i < m->node_count; i++) {
        copy->nodes[i].endpoint = m->nodes[i].endpoint;
        atomic_init(&copy->nodes[i].pool,
                    vk__pool_ref(atomic_load(&((vk_slot_map *)m)->nodes[i].pool)));
    }
    copy->node_count = m->node_count;
    memcpy(copy->owner, m->owner, sizeof copy->owner);
    return copy;
}

int vk__slot_map_find(const vk_slot_map *m, const vk_endpoint *ep)
{
    for (size_t i = 0; i < m->node_count; i++) {
        if (vk__endpoint_equal(&m->nodes[i].endpoint, ep))
            return (int)i;
    }
    return -1;
}

int vk__slot_map_node(vk_slot_map *m, const vk_endpoint *ep)
{
    int found = vk__slot_map_find(m, ep);
    if (found >= 0)
        return found;
    if (m->node_count == m->node_cap) {
        size_t cap = m->node_cap * 2;
        vk_cluster_node *grown = realloc(m->nodes, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        m->nodes = grown;
        m->node_cap = cap;
    }
    vk_cluster_node *n = &m->nodes[m->node_count];
    n->endpoint = *ep;
    atomic_init(&n->pool, NULL);
    return (int)m->node_count++;
}

size_t vk__slot_map_covered(const vk_slot_map *m)
{
    size_t n = 0;
    for (size_t i = 0; i < VK_CLUSTER_SLOTS; i++)
        n += m->owner[i] != 0;
    return n;
}

/* ---- parsing ------------------------------------------------------------------- */

static bool is_string(const redisReply *r)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static bool reply_is(const redisReply *r, const char *text)
{
    size_t n = strlen(text);
    return is_string(r) && r->len == n && memcmp(r->str, text, n) == 0;
}

/* An integer given as an integer or as decimal text; -1 otherwise. */
static long long reply_number(const redisReply *r)
{
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (!is_string(r) || r->len == 0 || r->len > 18)
        return -1;
    long long v = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->str[i] < '0' || r->str[i] > '9')
            return -1;
        v = v * 10 + (r->str[i] - '0');
    }
    return v;
}

/* Both a RESP2 flat array of pairs and a RESP3 map. */
static bool is_pairs(const redisReply *r)
{
#ifdef REDIS_REPLY_MAP
    if (r != NULL && r->type == REDIS_REPLY_MAP)
        return true;
#endif
    return r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements % 2 == 0;
}

static const redisReply *field(const redisReply *pairs, const char *name)
{
    for (size_t i = 0; i + 1 < pairs->elements; i += 2) {
        if (reply_is(pairs->element[i], name))
            return pairs->element[i + 1];
    }
    return NULL;
}

/* The host a node is reached at: its preferred endpoint, else its IP; a
 * node that does not know its own address ("?" or empty) is the one that
 * answered. */
static bool endpoint_of(vk_endpoint *out, const redisReply *host, long long port,
                        const vk_endpoint *from)
{
    memset(out, 0, sizeof *out);
    if (port <= 0 || port > 65535)
        return false;
    out->port = (int)port;
    if (is_string(host) && host->len > 0 && host->len < sizeof out->host &&
        !(host->len == 1 && host->str[0] == '?')) {
        memcpy(out->host, host->str, host->len);
        out->host[host->len] = '\0';
    } else {
        memcpy(out->host, from->host, sizeof out->host);
    }
    return true;
}

static bool assign(vk_slot_map *m, long long start, long long end, const vk_endpoint *ep)
{
    if (start < 0 || end >= VK_CLUSTER_SLOTS || start > end)
        return false;
    int node = vk__slot_map_node(m, ep);
    if (node < 0)
        return false;
    for (long long s = start; s <= end; s++)
        m->owner[s] = (uint16_t)(node + 1);
    return true;
}

/* The master of one CLUSTER SHARDS shard: the node that says it is a
 * master and online (a failed master that was just replaced may still be
 * listed as a master next to the promoted one). */
static const redisReply *shard_master(const redisReply *nodes)
{
    const redisReply *fallback = NULL;
    for (size_t i = 0; i < nodes->elements; i++) {
        const redisReply *n = nodes->element[i];
        if (!is_pairs(n) || !reply_is(field(n, "role"), "master"))
            continue;
        const redisReply *health = field(n, "health");
        if (health == NULL || reply_is(health, "online"))
            return n;
        if (fallback == NULL)
            fallback = n;
    }
    return fallback;
}

static bool parse_shard(vk_slot_map *m, const redisReply *shard, const vk_endpoint *from,
                        bool tls)
{
    if (!is_pairs(shard))
        return false;
    const redisReply *slots = field(shard, "slots");
    const redisReply *nodes = field(shard, "nodes");
    if (slots == NULL || nodes == NULL || slots->type != REDIS_REPLY_ARRAY ||
        nodes->type != REDIS_REPLY_ARRAY || slots->elements % 2 != 0)
        return false;
    if (slots->elements == 0)
        return true;   /* a shard without slots serves nothing */
    const redisReply *master = shard_master(nodes);
    if (master == NULL)
        return true;   /* no master right now: its slots stay unassigned */
    long long port = reply_number(field(master, tls ? "tls-port" : "port"));
    if (port <= 0)
        port = reply_number(field(master, "port"));
    const redisReply *host = field(master, "endpoint");
    if (!is_string(host) || host->len == 0 || (host->len == 1 && host->str[0] == '?'))
        host = field(master, "ip");
    vk_endpoint ep;
    if (!endpoint_of(&ep, host, port, from))
        return false;
    for (size_t i = 0; i < slots->elements; i += 2) {
        if (!assign(m, reply_number(slots->element[i]), reply_number(slots->element[i + 1]),
                    &ep))
            return false;
    }
    return true;
}

/* One CLUSTER SLOTS range: start, end, then the master as [host, port, id,
 * ...] followed by its replicas. */
static bool parse_range(vk_slot_map *m, const redisReply *range, const vk_endpoint *from)
{
    if (range == NULL || range->type != REDIS_REPLY_ARRAY || range->elements < 3)
        return false;
    const redisReply *master = range->element[2];
    if (master->type != REDIS_REPLY_ARRAY || master->elements < 2)
        return false;
    vk_endpoint ep;
    if (!endpoint_of(&ep, master->element[0], reply_number(master->element[1]), from))
        return false;
    return assign(m, reply_number(range->element[0]), reply_number(range->element[1]), &ep);
}

vk_status vk__slot_map_parse(vk_slot_map **out, const redisReply *reply, bool shards,
                             const vk_endpoint *from, bool tls,
                             const vk_slot_map *previous)
{
    *out = NULL;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY)
        return vk__fail_msg(VK_ERR_PROTOCOL, "redis cluster: unexpected reply to CLUSTER %s",
                            shards ? "SHARDS" : "SLOTS");
    vk_slot_map *m = map_alloc(reply->elements);
    if (m == NULL)
        return vk__fail_nomem();
    for (size_t i = 0; i < reply->elements; i++) {
        bool ok = shards ? parse_shard(m, reply->element[i], from, tls)
                         : parse_range(m, reply->element[i], from);
        if (!ok) {
            vk__slot_map_unref(m);
            return vk__fail_msg(VK_ERR_PROTOCOL,
                                "redis cluster: unexpected reply to CLUSTER %s",
                                shards ? "SHARDS" : "SLOTS");
        }
    }
    /* Keep the connections of nodes the previous map already used. */
    for (size_t i = 0; previous != NULL && i < m->node_count; i++) {
        int old = vk__slot_map_find(previous, &m->nodes[i].endpoint);
        if (old >= 0)
            atomic_store(&m->nodes[i].pool,
                         vk__pool_ref(atomic_load(&((vk_slot_map *)previous)->nodes[old].pool)));
    }
    *out = m;
    return VK_OK;
}
