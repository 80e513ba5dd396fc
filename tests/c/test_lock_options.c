/*
 * Lock options: defaults, the rate-limiter preset, and every validation
 * rule with its exact text (SEMANTICS §4). No server needed.
 */
#include "vkclient.h"
#include "vktest.h"

#include <math.h>

static void test_defaults(void)
{
    vk_lock_options opts;
    CHECK_OK(vk_lock_options_init(&opts, VK_LOCK_OPTIONS_VERSION));
    CHECK_EQ_INT(opts.version, VK_LOCK_OPTIONS_VERSION);
    CHECK_EQ_INT(opts.expiry_ms, 10000);
    CHECK_EQ_INT(opts.tries, 3);
    CHECK_EQ_INT(opts.retry_delay_ms, 500);
    CHECK(opts.drift_factor == 0.01);
    CHECK_EQ_INT(opts.auto_renew, 0);
    CHECK_OK(vk_lock_options_validate(&opts));

    vk_lock_options from_macro = VK_LOCK_OPTIONS_INIT;
    CHECK_EQ_INT(from_macro.expiry_ms, opts.expiry_ms);
    CHECK_EQ_INT(from_macro.tries, opts.tries);
    CHECK_EQ_INT(from_macro.retry_delay_ms, opts.retry_delay_ms);
    CHECK(from_macro.drift_factor == opts.drift_factor);
}

static void test_rate_limiter_preset(void)
{
    vk_lock_options opts;
    CHECK_OK(vk_lock_options_rate_limiter(&opts, VK_LOCK_OPTIONS_VERSION));
    CHECK_EQ_INT(opts.expiry_ms, 2000);
    CHECK_EQ_INT(opts.tries, 2);
    CHECK_EQ_INT(opts.retry_delay_ms, 100);
    CHECK(opts.drift_factor == 0.01);
    CHECK_OK(vk_lock_options_validate(&opts));
}

static void test_expiry_rule(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 0;
    CHECK_FAILS(vk_lock_options_validate(&opts), VK_ERR_LOCK_EXPIRY_INVALID,
                "lock expiry must be greater than 0");
    opts.expiry_ms = -5;
    CHECK_FAILS(vk_lock_options_validate(&opts), VK_ERR_LOCK_EXPIRY_INVALID,
                "lock expiry must be greater than 0");
    opts.expiry_ms = 1;
    CHECK_OK(vk_lock_options_validate(&opts));
}

static void test_tries_rules(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.tries = 0;
    CHECK_FAILS(vk_lock_options_validate(&opts), VK_ERR_LOCK_TRIES_INVALID,
                "lock tries must be at least 1");
    opts.tries = -3;
    CHECK_FAILS(vk_lock_options_validate(&opts), VK_ERR_LOCK_TRIES_INVALID,
                "lock tries must be at least 1");
    opts.tries = 1001;
    CHECK_FAILS(vk_lock_options_validate(&opts), VK_ERR_LOCK_TRIES_EXCEEDED,
                "lock tries exceeds maximum");
    opts.tries = 1000;
    CHECK_OK(vk_lock_options_validate(&opts));
    opts.tries = 1;
    CHECK_OK(vk_lock_options_validate(&opts));
}

static void test_retry_delay_rule(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.retry_delay_ms = -1;
    CHECK_FAILS(vk_lock_options_validate(&opts), VK_ERR_LOCK_RETRY_DELAY_NEGATIVE,
                "lock retry delay cannot be negative");
    opts.retry_delay_ms = 0;
    CHECK_OK(vk_lock_options_validate(&opts));
}

static void test_drift_factor_rule(void)
{
    const char *text = "lock drift factor must be between 0 (inclusive) and 1 (exclusive)";
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.drift_factor = -0.01;
    CHECK_FAILS(vk_lock_options_validate(&opts), VK_ERR_LOCK_DRIFT_FACTOR_INVALID, text);
    opts.drift_factor = 1.0;
    CHECK_FAILS(vk_lock_options_validate(&opts), VK_ERR_LOCK_DRIFT_FACTOR_INVALID, text);
    opts.drift_factor = NAN;
    CHECK_FAILS(vk_lock_options_validate(&opts), VK_ERR_LOCK_DRIFT_FACTOR_INVALID, text);
    opts.drift_factor = 0.0;
    CHECK_OK(vk_lock_options_validate(&opts));
    opts.drift_factor = 0.999;
    CHECK_OK(vk_lock_options_validate(&opts));
}

/* Rules are checked in the order of the table in SEMANTICS §4. */
static void test_first_broken_rule_wins(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    opts.expiry_ms = 0;
    opts.tries = 0;
    opts.retry_delay_ms = -1;
    opts.drift_factor = 2;
    CHECK_FAILS(vk_lock_options_validate(&opts), VK_ERR_LOCK_EXPIRY_INVALID,
                "lock expiry must be greater than 0");
}

static void test_versions_and_null(void)
{
    vk_lock_options opts = VK_LOCK_OPTIONS_INIT;
    CHECK_FAILS(vk_lock_options_init(&opts, 99), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: lock options version 99 is newer than this library "
                "(which reads up to version 1)");
    CHECK_FAILS(vk_lock_options_rate_limiter(&opts, 0), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: lock options version 0 is not valid: start from "
                "VK_LOCK_OPTIONS_INIT or vk_lock_options_init()");
    opts.version = 2;
    CHECK_FAILS(vk_lock_options_validate(&opts), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: lock options version 2 is newer than this library "
                "(which reads up to version 1)");
    CHECK_FAILS(vk_lock_options_init(NULL, VK_LOCK_OPTIONS_VERSION), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: lock options are nil");
    CHECK_FAILS(vk_lock_options_rate_limiter(NULL, VK_LOCK_OPTIONS_VERSION),
                VK_ERR_INVALID_ARGUMENT, "invalid argument: lock options are nil");
    CHECK_FAILS(vk_lock_options_validate(NULL), VK_ERR_INVALID_ARGUMENT,
                "invalid argument: lock options are nil");
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_rate_limiter_preset);
    RUN(test_expiry_rule);
    RUN(test_tries_rules);
    RUN(test_retry_delay_rule);
    RUN(test_drift_factor_rule);
    RUN(test_first_broken_rule_wins);
    RUN(test_versions_and_null);
    return vkt_finish();
}
