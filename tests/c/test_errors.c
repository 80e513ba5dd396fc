/*
 * Status codes and texts, the thread-local detail, versions, and Go-style
 * duration formatting.
 */
#include "config.h"
#include "vktest.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_strerror_every_code(void)
{
    static const struct {
        vk_status code;
        const char *text;
    } expected[] = {
        {VK_OK, "ok"},
        {VK_ERR_NIL_CLIENT, "redis client is nil"},
        {VK_ERR_INVALID_CONFIG, "invalid redis config"},
        {VK_ERR_NIL_LOCK_HANDLE, "lock handle is nil or not initialized"},
        {VK_ERR_LOCK_NOT_HELD, "lock was not held or already expired"},
        {VK_ERR_NIL_LOCK_MANAGER, "lock manager is nil"},
        {VK_ERR_LOCK_NOT_INITIALIZED, "distributed lock is not initialized"},
        {VK_ERR_NIL_LOCK_FN, "lock function is nil"},
        {VK_ERR_EMPTY_LOCK_KEY, "lock key cannot be empty"},
        {VK_ERR_LOCK_EXPIRY_INVALID, "lock expiry must be greater than 0"},
        {VK_ERR_LOCK_TRIES_INVALID, "lock tries must be at least 1"},
        {VK_ERR_LOCK_TRIES_EXCEEDED, "lock tries exceeds maximum"},
        {VK_ERR_LOCK_RETRY_DELAY_NEGATIVE, "lock retry delay cannot be negative"},
        {VK_ERR_LOCK_DRIFT_FACTOR_INVALID,
         "lock drift factor must be between 0 (inclusive) and 1 (exclusive)"},
        {VK_ERR_NIL_LOCK_HANDLE_ON_UNLOCK, "lock handle is nil"},
        {VK_ERR_LOCK_ACQUIRE, "failed to acquire lock"},
        {VK_ERR_LOCK_FN, "distributed lock: function execution"},
        {VK_ERR_IO, "connection error"},
        {VK_ERR_TIMEOUT, "i/o timeout"},
        {VK_ERR_POOL_TIMEOUT, "connection pool timeout"},
        {VK_ERR_RECONNECT_RATE_LIMITED, "redis reconnect: rate-limited"},
        {VK_ERR_AUTH, "authentication failed"},
        {VK_ERR_TLS, "TLS error"},
        {VK_ERR_IAM, "GCP IAM token request failed"},
        {VK_ERR_PROTOCOL, "protocol error"},
        {VK_ERR_NO_MEMORY, "out of memory"},
        {VK_ERR_INVALID_ARGUMENT, "invalid argument"},
        {VK_ERR_CANCELLED, "operation cancelled"},
        {VK_ERR_SERVER, "server error reply"},
        {VK_ERR_LOCK_LOST, "lock was lost while held"},
        {VK_ERR_COMMAND_NOT_ALLOWED, "command not allowed on a shared connection"},
        {VK_ERR_WATCH_CONFLICT, "transaction aborted: a watched key changed"},
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        CHECK_EQ_STR(vk_strerror(expected[i].code), expected[i].text);
    CHECK_EQ_STR(vk_strerror((vk_status)999), "unknown error");
    CHECK_EQ_STR(vk_strerror((vk_status)-1), "unknown error");
}

static void test_fail_formats_detail(void)
{
    CHECK_EQ_INT(vk__fail(VK_ERR_INVALID_CONFIG, "standalone address is required"),
                 VK_ERR_INVALID_CONFIG);
    CHECK_EQ_STR(vk_last_error(), "invalid redis config: standalone address is required");
    CHECK_EQ_INT(vk_last_status(), VK_ERR_INVALID_CONFIG);

    CHECK_EQ_INT(vk__fail(VK_ERR_TIMEOUT, NULL), VK_ERR_TIMEOUT);
    CHECK_EQ_STR(vk_last_error(), "i/o timeout");

    CHECK_EQ_INT(vk__fail_msg(VK_ERR_LOCK_ACQUIRE, "failed to acquire lock %s: %s", "\"k\"",
                              "lock already taken"),
                 VK_ERR_LOCK_ACQUIRE);
    CHECK_EQ_STR(vk_last_error(), "failed to acquire lock \"k\": lock already taken");

    CHECK_EQ_INT(vk__fail_nomem(), VK_ERR_NO_MEMORY);
    CHECK_EQ_STR(vk_last_error(), "out of memory");
}

static void test_long_messages_grow(void)
{
    char big[20000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    vk__fail(VK_ERR_SERVER, "%s", big);
    const char *msg = vk_last_error();
    CHECK_EQ_INT(strlen(msg), strlen("server error reply: ") + sizeof big - 1);
    CHECK(strncmp(msg, "server error reply: xxx", 23) == 0);
}

static void test_detail_may_reference_itself(void)
{
    vk__fail(VK_ERR_IO, "dial tcp: refused");
    /* Wrapping the current detail in a new one must not read freed memory. */
    vk__fail_msg(VK_ERR_IO, "reconnect: %s", vk_last_error());
    CHECK_EQ_STR(vk_last_error(), "reconnect: connection error: dial tcp: refused");
}

static void test_dup_and_restore(void)
{
    vk__fail(VK_ERR_AUTH, "WRONGPASS invalid username-password pair");
    char *saved = vk__error_dup();
    CHECK_EQ_STR(saved, "authentication failed: WRONGPASS invalid username-password pair");
    vk__fail(VK_ERR_IO, "something else");
    CHECK_EQ_INT(vk__fail_restore(VK_ERR_AUTH, saved), VK_ERR_AUTH);
    CHECK_EQ_STR(vk_last_error(), saved);
    CHECK_EQ_INT(vk_last_status(), VK_ERR_AUTH);
    vk__fail_restore(VK_ERR_TLS, NULL);
    CHECK_EQ_STR(vk_last_error(), "TLS error");
    free(saved);
}

static void *fail_on_other_thread(void *arg)
{
    vk__fail(VK_ERR_TLS, "on another thread");
    char **seen = arg;
    *seen = vk__error_dup();
    return NULL;
}

static void test_detail_is_per_thread(void)
{
    vk__fail(VK_ERR_IAM, "main thread");
    char *other = NULL;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fail_on_other_thread, &other) == 0);
    pthread_join(t, NULL);
    CHECK_EQ_STR(other, "TLS error: on another thread");
    CHECK_EQ_STR(vk_last_error(), "GCP IAM token request failed: main thread");
    free(other);
}

static void *fresh_thread_state(void *arg)
{
    const char **seen = arg;
    seen[0] = vk_last_error();
    seen[1] = vk_last_status() == VK_OK ? "ok" : "not ok";
    return NULL;
}

static void test_fresh_thread_has_no_error(void)
{
    const char *seen[2] = {NULL, NULL};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fresh_thread_state, seen) == 0);
    pthread_join(t, NULL);
    CHECK_EQ_STR(seen[0], "");
    CHECK_EQ_STR(seen[1], "ok");
}

static void test_versions(void)
{
    CHECK_EQ_STR(vk_version(), VK_VERSION_STRING);
    CHECK_EQ_INT(vk_version_number(), VK_VERSION_NUMBER);
    CHECK_EQ_INT(VK_VERSION_NUMBER,
                 VK_VERSION_MAJOR * 10000 + VK_VERSION_MINOR * 100 + VK_VERSION_PATCH);
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    CHECK_EQ_STR(vk_hiredis_version(), expected);
    CHECK_EQ_INT(vk_resp3_supported(), HIREDIS_MAJOR >= 1);
    vk_free(NULL); /* NULL-safe */
    vk_free(malloc(8));
}

static void test_format_duration(void)
{
    static const struct {
        int64_t ms;
        const char *text;
    } cases[] = {
        {0, "0s"},         {1, "1ms"},          {250, "250ms"},      {999, "999ms"},
        {1000, "1s"},      {1500, "1.5s"},      {1250, "1.25s"},     {1001, "1.001s"},
        {30000, "30s"},    {59999, "59.999s"},  {60000, "1m0s"},     {90500, "1m30.5s"},
        {120000, "2m0s"},  {3600000, "1h0m0s"}, {3000000, "50m0s"},  {-250, "-250ms"},
        {-1500, "-1.5s"},  {3723004, "1h2m3.004s"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[64];
        vk__format_duration_ms(buf, sizeof buf, cases[i].ms);
        CHECK_EQ_STR(buf, cases[i].text);
    }
    char small[4];
    vk__format_duration_ms(small, sizeof small, 123456);
    CHECK_EQ_INT(strlen(small), 3); /* cut, still terminated */
}

static void test_clock_and_random(void)
{
    int64_t a = vk__now_us(), b = vk__now_us();
    CHECK(b >= a);
    CHECK(vk__now_ms() >= a / 1000);
    CHECK(vk__wall_ms() > 1600000000000LL);

    unsigned char x[32] = {0}, y[32] = {0};
    CHECK_EQ_INT(vk__random_bytes(x, sizeof x), 0);
    CHECK_EQ_INT(vk__random_bytes(y, sizeof y), 0);
    CHECK(memcmp(x, y, sizeof x) != 0);
    CHECK_EQ_INT(vk__random_bytes(x, 0), 0);

    CHECK_EQ_INT(vk__jitter(0), 0);
    CHECK_EQ_INT(vk__jitter(-5), 0);
    CHECK_EQ_INT(vk__jitter(1), 0);
    bool in_range = true, saw_low = false, saw_high = false;
    for (int i = 0; i < 10000; i++) {
        int64_t j = vk__jitter(100);
        in_range = in_range && j >= 0 && j < 100;
        saw_low = saw_low || j < 10;
        saw_high = saw_high || j >= 90;
    }
    CHECK(in_range);
    CHECK(saw_low && saw_high); /* spread over the range */
}

/* Random values come from a per-thread buffer: a forked child must not
 * hand out what its parent hands out next (two lock holders would share
 * a lock value). */
static void test_random_differs_after_fork(void)
{
    unsigned char warm[8];
    CHECK_EQ_INT(vk__random_bytes(warm, sizeof warm), 0); /* fills the buffer */
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t child = fork();
    if (child == 0) {
        unsigned char mine[16];
        int ok = vk__random_bytes(mine, sizeof mine) == 0 &&
                 write(fds[1], mine, sizeof mine) == (ssize_t)sizeof mine;
        _exit(ok ? 0 : 1);
    }
    unsigned char parent[16], from_child[16];
    CHECK_EQ_INT(vk__random_bytes(parent, sizeof parent), 0);
    CHECK(read(fds[0], from_child, sizeof from_child) == (ssize_t)sizeof from_child);
    int status = -1;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(memcmp(parent, from_child, sizeof parent) != 0);
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    RUN(test_strerror_every_code);
    RUN(test_fail_formats_detail);
    RUN(test_long_messages_grow);
    RUN(test_detail_may_reference_itself);
    RUN(test_dup_and_restore);
    RUN(test_detail_is_per_thread);
    RUN(test_fresh_thread_has_no_error);
    RUN(test_versions);
    RUN(test_format_duration);
    RUN(test_clock_and_random);
    RUN(test_random_differs_after_fork);
    return vkt_finish();
}
