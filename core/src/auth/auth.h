/*
 * The auth layer's face: the IAM token provider that keeps a client's
 * credentials fresh (refresh.c, over gcp_iam.c, jwt.c and http.c).
 */
#ifndef VK_AUTH_H
#define VK_AUTH_H

#include "config/config.h"

/* ---- refresh.c / gcp_iam.c: the IAM token provider ----------------------- */

/* Called by the refresher with each new token; the client applies it to new
 * connections and re-authenticates (or replaces) live ones without failing
 * any command. Returns VK_OK once the new token is in service. */
typedef vk_status (*vk_apply_credentials_fn)(void *client, const char *username,
                                             const char *password);

/* Told of each failed fetch (status and text), on the thread that made it. */
typedef void (*vk_refresh_failed_fn)(void *client, vk_status st, const char *text);

typedef struct vk_refresher vk_refresher;

/* Reads the IAM settings of a prepared cfg. */
vk_status vk__refresher_new(vk_refresher **out, const vk_config *cfg, vk_events *ev,
                            vk_apply_credentials_fn apply, void *client);
void vk__refresher_free(vk_refresher *r);
/* Sets the function told of failed fetches (none by default). */
void vk__refresher_on_failure(vk_refresher *r, vk_refresh_failed_fn failed);
/* Fetches the first token (before the first connect) and applies it. */
vk_status vk__refresher_fetch_now(vk_refresher *r, vk_context *ctx);
/* Starts the loop (a thread, or nothing in driven mode). Never twice. A
 * loop started before any token was fetched fetches the first at once. */
vk_status vk__refresher_start(vk_refresher *r);
/* Driven mode: runs whatever is due. */
vk_status vk__refresher_tick(vk_refresher *r, vk_context *ctx);
/* Stops and joins the loop. Idempotent. */
void vk__refresher_stop(vk_refresher *r);
/* After fork() in the child: forget the parent's thread without joining;
 * the loop is started again on next use. */
void vk__refresher_after_fork(vk_refresher *r);
/* Fetches and applies a token now when the one in service is older than
 * refresh_every (or there is none), whatever the mode and back-off; VK_OK
 * when it is fresh. For a reconnect after close or fork, when the loop was
 * not running and the token may have expired. */
vk_status vk__refresher_refresh_if_stale(vk_refresher *r, vk_context *ctx);
/* Status fields; *last_error is malloc'd or NULL. */
void vk__refresher_status(vk_refresher *r, char **last_error, int64_t *last_refresh_at_ms,
                          bool *running);

#endif /* VK_AUTH_H */
