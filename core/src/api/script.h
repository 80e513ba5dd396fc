/*
 * The script object (script.c) as the blocking and event-loop paths share
 * it: a counted reference keeps it alive for an operation in flight after
 * the caller freed it.
 */
#ifndef VK_API_SCRIPT_H
#define VK_API_SCRIPT_H

#include "proto/proto.h"

#include <stdatomic.h>

struct vk_script {
    atomic_int refs;
    char sha[41];
    size_t len;
    char source[];       /* len bytes and a NUL */
};

void vk__script_ref(vk_script *script);
/* The checks of a run's arguments (VK_ERR_INVALID_ARGUMENT), then the
 * EVALSHA call built from them. */
vk_status vk__script_prepare(vk_script_call *call, const vk_script *script, int nkeys,
                             const char *const *keys, const size_t *keylens, int nargs,
                             const char *const *args, const size_t *arglens);

#endif /* VK_API_SCRIPT_H */
