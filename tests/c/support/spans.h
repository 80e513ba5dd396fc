/*
 * A recording tracer for the tests of spans (vk_config_set_tracer): every
 * span, in start order, with its parent, attributes (the start's, then the
 * end's), status, error, times and thread. Thread-safe; one per process.
 */
#ifndef VKTEST_SPANS_H
#define VKTEST_SPANS_H

#include "vkclient.h"

#include <pthread.h>
#include <stdbool.h>

#define VKT_MAX_SPAN_ATTRS 16

typedef struct vkt_span {
    char name[32];
    void *parent;
    int64_t start_ns, end_ns;
    bool ended;
    vk_status status;
    char error[512];
    char keys[VKT_MAX_SPAN_ATTRS][40];
    char values[VKT_MAX_SPAN_ATTRS][300];
    size_t nattrs;
    pthread_t thread;
} vkt_span;

/* The tracer's functions; userdata is ignored (pass NULL). A span handle
 * is its vkt_span. */
void *vkt_span_start(void *userdata, const char *name, void *parent, int64_t start_ns,
                     const vk_field *attrs, size_t nattrs);
void vkt_span_end(void *userdata, void *span, int64_t end_ns, vk_status status,
                  const char *error, const vk_field *attrs, size_t nattrs);
/* Forgets every span recorded so far. */
void vkt_spans_reset(void);
size_t vkt_spans_count(void);
/* The nth span (0-based) with that name, or NULL. */
vkt_span *vkt_spans_find(const char *name, int nth);
int vkt_spans_named(const char *name);
/* An attribute's value, or NULL. */
const char *vkt_span_attr(const vkt_span *s, const char *key);
/* No attribute value and no error of any span holds needle. */
bool vkt_spans_free_of(const char *needle);

#endif /* VKTEST_SPANS_H */
