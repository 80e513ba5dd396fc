/*
 * The recording tracer of spans.h.
 */
#include "spans.h"

#include <stdio.h>
#include <string.h>

#define MAX_SPANS 256

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static vkt_span spans[MAX_SPANS];
static size_t count;

static void add_attrs(vkt_span *s, const vk_field *attrs, size_t n)
{
    for (size_t i = 0; i < n && s->nattrs < VKT_MAX_SPAN_ATTRS; i++, s->nattrs++) {
        snprintf(s->keys[s->nattrs], sizeof s->keys[0], "%s", attrs[i].key);
        snprintf(s->values[s->nattrs], sizeof s->values[0], "%s", attrs[i].value);
    }
}

void *vkt_span_start(void *userdata, const char *name, void *parent, int64_t start_ns,
                     const vk_field *attrs, size_t nattrs)
{
    (void)userdata;
    pthread_mutex_lock(&lock);
    vkt_span *s = NULL;
    if (count < MAX_SPANS) {
        s = &spans[count++];
        memset(s, 0, sizeof *s);
        snprintf(s->name, sizeof s->name, "%s", name);
        s->parent = parent;
        s->start_ns = start_ns;
        s->thread = pthread_self();
        add_attrs(s, attrs, nattrs);
    }
    pthread_mutex_unlock(&lock);
    return s;
}

void vkt_span_end(void *userdata, void *span, int64_t end_ns, vk_status status,
                  const char *error, const vk_field *attrs, size_t nattrs)
{
    (void)userdata;
    vkt_span *s = span;
    if (s == NULL)
        return;
    pthread_mutex_lock(&lock);
    s->ended = true;
    s->end_ns = end_ns;
    s->status = status;
    snprintf(s->error, sizeof s->error, "%s", error != NULL ? error : "");
    add_attrs(s, attrs, nattrs);
    pthread_mutex_unlock(&lock);
}

void vkt_spans_reset(void)
{
    pthread_mutex_lock(&lock);
    count = 0;
    pthread_mutex_unlock(&lock);
}

size_t vkt_spans_count(void)
{
    pthread_mutex_lock(&lock);
    size_t n = count;
    pthread_mutex_unlock(&lock);
    return n;
}

vkt_span *vkt_spans_find(const char *name, int nth)
{
    pthread_mutex_lock(&lock);
    vkt_span *found = NULL;
    for (size_t i = 0; i < count && found == NULL; i++)
        if (strcmp(spans[i].name, name) == 0 && nth-- == 0)
            found = &spans[i];
    pthread_mutex_unlock(&lock);
    return found;
}

int vkt_spans_named(const char *name)
{
    pthread_mutex_lock(&lock);
    int n = 0;
    for (size_t i = 0; i < count; i++)
        n += strcmp(spans[i].name, name) == 0;
    pthread_mutex_unlock(&lock);
    return n;
}

const char *vkt_span_attr(const vkt_span *s, const char *key)
{
    for (size_t i = 0; s != NULL && i < s->nattrs; i++)
        if (strcmp(s->keys[i], key) == 0)
            return s->values[i];
    return NULL;
}

bool vkt_spans_free_of(const char *needle)
{
    pthread_mutex_lock(&lock);
    bool clean = true;
    for (size_t i = 0; i < count && clean; i++) {
        if (strstr(spans[i].error, needle) != NULL)
            clean = false;
        for (size_t a = 0; a < spans[i].nattrs && clean; a++)
            if (strstr(spans[i].values[a], needle) != NULL)
                clean = false;
    }
    pthread_mutex_unlock(&lock);
    return clean;
}
