/*
 * Lock options as a lock call reads them (lock_options.c).
 */
#ifndef VK_LOCK_OPTIONS_H
#define VK_LOCK_OPTIONS_H

#include "support/support.h"

/* ---- lock_options.c ------------------------------------------------------ */

/* The options a lock call runs with: the defaults for NULL, else the
 * caller's struct of any accepted version, read field by field (the fields
 * its version lacks take their defaults) and validated. */
vk_status vk__lock_options_resolve(vk_lock_options *out, const vk_lock_options *opts);

#endif /* VK_LOCK_OPTIONS_H */
