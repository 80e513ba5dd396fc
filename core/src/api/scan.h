/*
 * Scans (scan.c): what the blocking scan and the event-loop / bytes-mode
 * scan (scan_driven.c) share: the cursor object, its pages' arguments, the
 * cluster walk's plan and the reading of a page.
 */
#ifndef VK_SCAN_H
#define VK_SCAN_H

#include "api/driven.h"

/* The largest cursor: an unsigned 64-bit decimal (20 digits). */
#define VK_SCAN_CURSOR_MAX 24
/* The most arguments a page has: SCAN cursor MATCH m COUNT n TYPE t. */
#define VK_SCAN_ARGS 9

/* The masters of the map a cluster walk began with. */
typedef struct vk_scan_plan {
    vk_endpoint *nodes;         /* the masters serving slots, in walk order */
    size_t count;
    uint16_t owner[VK_CLUSTER_SLOTS];   /* slot -> index in nodes + 1; 0: none */
    uint64_t version;           /* the version of the map last found equal */
} vk_scan_plan;

struct vk_scan {
    /* One of the two: */
    vk_client *client;          /* blocking: a reference (outlives vk_client_free) */
    vk_driven *d;               /* event loop / bytes mode: NULL once the client is gone */
    vk_driven_kind kind;        /* d's kind */
    vk_driven_watch watch;      /* tells when d goes */

    char command[6];            /* SCAN, HSCAN, SSCAN or ZSCAN */
    char *key;                  /* NULL for SCAN */
    size_t keylen;
    char *match;                /* NULL: no MATCH */
    size_t matchlen;
    char count[24];             /* "": no COUNT */
    char *type;                 /* NULL: no TYPE */
    char cursor[VK_SCAN_CURSOR_MAX];
    bool done;
    bool walk;                  /* a cluster SCAN: every master in turn */
    vk_scan_plan *plan;         /* a walk's, captured with the first page */
    size_t node;                /* the master being read */

    /* A page in flight (scan_driven.c). */
    bool in_flight;
    bool free_asked;            /* vk_scan_free came meanwhile */
    uint64_t op_id;
    vk_async_fn fn;
    void *userdata;
};

/* A scan with its options checked and copied (command SCAN: key NULL);
 * neither client nor d set. */
vk_status vk__scan_alloc(vk_scan **out, const char *command, const char *key, size_t keylen,
                         const char *match, size_t matchlen, int64_t count, const char *type);
/* Checks the command name of vk_X_scan_new_key and upper-cases it into
 * upper; VK_ERR_INVALID_ARGUMENT for anything but HSCAN, SSCAN, ZSCAN. */
vk_status vk__scan_key_command(const char *command, const char *key, size_t keylen,
                               char upper[6]);
/* The next page's arguments; returns their count. */
int vk__scan_argv(const vk_scan *s, const char *argv[VK_SCAN_ARGS],
                  size_t argvlen[VK_SCAN_ARGS]);
/* A walk: captures the masters serving slots in m. */
vk_status vk__scan_capture(vk_scan *s, const vk_slot_map *m, uint64_t version);
/* The master the next page of a walk goes to (NULL when not walking). */
const vk_endpoint *vk__scan_node(const vk_scan *s);
/* Reads a page's reply: the items (detached from r) in *items and the
 * cursor moved on; a walk's page counts only while m (the map in service,
 * of that version) gives every slot to the master it had when the walk
 * began. A failure (an error reply: VK_ERR_SERVER; a changed map:
 * VK_ERR_IO) leaves the cursor where it was. */
vk_status vk__scan_take(vk_scan *s, redisReply *r, const vk_slot_map *m, uint64_t version,
                        redisReply **items);
/* Frees what a scan owns and the scan (not the client reference). */
void vk__scan_release(vk_scan *s);
/* scan_driven.c: vk_scan_free of a driven scan (cancels a page in flight). */
void vk__scan_driven_free(vk_scan *s);

#endif /* VK_SCAN_H */
