/*
 * Status codes, their fixed texts, and the thread-local detail of the last
 * failure. Only failures touch thread-local storage: the success path of
 * every call stays free of it.
 */
#include "support/support.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The last failure on this thread. The message buffer grows as needed and
 * is released by a thread-exit destructor. */
static _Thread_local vk_status last_code = VK_OK;
static _Thread_local char *last_message = NULL;

static pthread_key_t message_key;
static pthread_once_t message_key_once = PTHREAD_ONCE_INIT;

static void free_message_at_thread_exit(void *message)
{
    free(message);
}

/* The key's destructor is code of the object that holds this file: a
 * thread that exits after the host dlclose()d it (lua_close() unloads a
 * Lua C module, and with it this library) would jump into unmapped memory.
 * So once a thread may own a message, the object stays loaded for the rest
 * of the process (RTLD_NODELETE, as OpenSSL does for the same reason).
 * Deleting the key at unload instead would leak the message of every
 * thread still alive, and could free one in use by a thread still running
 * at exit. Where this code is linked into the program itself, pinning
 * changes nothing. */
static void pin_this_object(void)
{
    Dl_info info;
    if (dladdr((void *)free_message_at_thread_exit, &info) == 0 || info.dli_fname == NULL)
        return;
    /* The reference is never given back. */
    (void)dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
}

static void create_message_key(void)
{
    pin_this_object();
    (void)pthread_key_create(&message_key, free_message_at_thread_exit);
}

/* Installs a freshly allocated message (or NULL) as this thread's detail. */
static void replace_message(char *message)
{
    pthread_once(&message_key_once, create_message_key);
    free(last_message);
    last_message = message;
    (void)pthread_setspecific(message_key, message);
}

VK_API const char *vk_strerror(vk_status code)
{
    switch (code) {
    case VK_OK: return "ok";
    case VK_ERR_NIL_CLIENT: return "redis client is nil";
    case VK_ERR_INVALID_CONFIG: return "invalid redis config";
    case VK_ERR_NIL_LOCK_HANDLE: return "lock handle is nil or not initialized";
    case VK_ERR_LOCK_NOT_HELD: return "lock was not held or already expired";
    case VK_ERR_NIL_LOCK_MANAGER: return "lock manager is nil";
    case VK_ERR_LOCK_NOT_INITIALIZED: return "distributed lock is not initialized";
    case VK_ERR_NIL_LOCK_FN: return "lock function is nil";
    case VK_ERR_EMPTY_LOCK_KEY: return "lock key cannot be empty";
    case VK_ERR_LOCK_EXPIRY_INVALID: return "lock expiry must be greater than 0";
    case VK_ERR_LOCK_TRIES_INVALID: return "lock tries must be at least 1";
    case VK_ERR_LOCK_TRIES_EXCEEDED: return "lock tries exceeds maximum";
    case VK_ERR_LOCK_RETRY_DELAY_NEGATIVE: return "lock retry delay cannot be negative";
    case VK_ERR_LOCK_DRIFT_FACTOR_INVALID:
        return "lock drift factor must be between 0 (inclusive) and 1 (exclusive)";
    case VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK: return "lock handle is nil";
    case VK_ERR_LOCK_ACQUIRE: return "failed to acquire lock";
    case VK_ERR_LOCK_FN: return "distributed lock: function execution";
    case VK_ERR_IO: return "connection error";
    case VK_ERR_TIMEOUT: return "i/o timeout";
    case VK_ERR_POOL_TIMEOUT: return "connection pool timeout";
    case VK_ERR_RECONNECT_RATE_LIMITED: return "redis reconnect: rate-limited";
    case VK_ERR_AUTH: return "authentication failed";
    case VK_ERR_TLS: return "TLS error";
    case VK_ERR_IAM: return "GCP IAM token request failed";
    case VK_ERR_PROTOCOL: return "protocol error";
    case VK_ERR_NO_MEMORY: return "out of memory";
    case VK_ERR_INVALID_ARGUMENT: return "invalid argument";
    case VK_ERR_CANCELLED: return "operation cancelled";
    case VK_ERR_SERVER: return "server error reply";
    case VK_ERR_LOCK_LOST: return "lock was lost while held";
    case VK_ERR_COMMAND_NOT_ALLOWED: return "command not allowed on a shared connection";
    case VK_ERR_WATCH_CONFLICT: return "transaction aborted: a watched key changed";
    }
    return "unknown error";
}

VK_API const char *vk_last_error(void)
{
    if (last_message != NULL)
        return last_message;
    return last_code != VK_OK ? vk_strerror(last_code) : "";
}

VK_API vk_status vk_last_status(void)
{
    return last_code;
}

VK_API void vk_free(void *ptr)
{
    free(ptr);
}

/* Formats "<prefix><fmt...>" into a new buffer of the exact size. The
 * arguments may point into the current detail, which stays alive until
 * the new one replaces it. NULL when out of memory. */
static char *format_message(const char *prefix, const char *fmt, va_list ap)
{
    size_t prefix_len = strlen(prefix);
    va_list measure;
    va_copy(measure, ap);
    int body_len = vsnprintf(NULL, 0, fmt, measure);
    va_end(measure);
    if (body_len < 0)
        body_len = 0;
    char *message = malloc(prefix_len + (size_t)body_len + 1);
    if (message == NULL)
        return NULL;
    memcpy(message, prefix, prefix_len);
    vsnprintf(message + prefix_len, (size_t)body_len + 1, fmt, ap);
    return message;
}

static char *copy_text(const char *text)
{
    size_t len = strlen(text);
    char *copy = malloc(len + 1);
    if (copy != NULL)
        memcpy(copy, text, len + 1);
    return copy;
}

/* Out of memory while recording a failure: keep the code, and a static
 * text through vk_last_error(). */
static vk_status record_without_message(vk_status code)
{
    replace_message(NULL);
    last_code = code;
    return code;
}

static vk_status record(vk_status code, char *message)
{
    if (message == NULL)
        return record_without_message(code);
    replace_message(message);
    last_code = code;
    return code;
}

vk_status vk__fail(vk_status code, const char *fmt, ...)
{
    if (fmt == NULL)
        return record(code, copy_text(vk_strerror(code)));
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s: ", vk_strerror(code));
    va_list ap;
    va_start(ap, fmt);
    char *message = format_message(prefix, fmt, ap);
    va_end(ap);
    return record(code, message);
}

vk_status vk__fail_msg(vk_status code, const char *fmt, ...)
{
    if (fmt == NULL)
        return record(code, copy_text(vk_strerror(code)));
    va_list ap;
    va_start(ap, fmt);
    char *message = format_message("", fmt, ap);
    va_end(ap);
    return record(code, message);
}

vk_status vk__fail_nomem(void)
{
    return record(VK_ERR_NO_MEMORY, copy_text(vk_strerror(VK_ERR_NO_MEMORY)));
}

void vk__error_clear(void)
{
    replace_message(NULL);
    last_code = VK_OK;
}

char *vk__error_dup(void)
{
    return last_message != NULL ? copy_text(last_message) : NULL;
}

vk_status vk__fail_restore(vk_status code, const char *detail)
{
    return record(code, copy_text(detail != NULL ? detail : vk_strerror(code)));
}
