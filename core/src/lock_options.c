/*
 * Lock options: the defaults, the rate-limiter preset and validation with
 * the exact texts of SEMANTICS §4.
 */
#include "internal.h"

static vk_status check_version(unsigned int version)
{
    if (version != VK_LOCK_OPTIONS_VERSION)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "unknown lock options version %u", version);
    return VK_OK;
}

vk_status vk_lock_options_init(vk_lock_options *opts, unsigned int version)
{
    if (!opts)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "lock options are nil");
    vk_status st = check_version(version);
    if (st != VK_OK)
        return st;
    const vk_lock_options defaults = VK_LOCK_OPTIONS_INIT;
    *opts = defaults;
    return VK_OK;
}

vk_status vk_lock_options_rate_limiter(vk_lock_options *opts, unsigned int version)
{
    vk_status st = vk_lock_options_init(opts, version);
    if (st != VK_OK)
        return st;
    /* Short-lived locks that give up quickly: a limiter must not queue. */
    opts->expiry_ms = 2000;
    opts->tries = 2;
    opts->retry_delay_ms = 100;
    opts->drift_factor = 0.01;
    return VK_OK;
}

vk_status vk_lock_options_validate(const vk_lock_options *opts)
{
    if (!opts)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "lock options are nil");
    vk_status st = check_version(opts->version);
    if (st != VK_OK)
        return st;
    if (opts->expiry_ms <= 0)
        return vk__fail_msg(VK_ERR_LOCK_EXPIRY_INVALID, "lock expiry must be greater than 0");
    if (opts->tries < 1)
        return vk__fail_msg(VK_ERR_LOCK_TRIES_INVALID, "lock tries must be at least 1");
    if (opts->tries > 1000)
        return vk__fail_msg(VK_ERR_LOCK_TRIES_EXCEEDED, "lock tries exceeds maximum");
    if (opts->retry_delay_ms < 0)
        return vk__fail_msg(VK_ERR_LOCK_RETRY_DELAY_NEGATIVE,
                            "lock retry delay cannot be negative");
    /* Written so that NaN fails too. */
    if (!(opts->drift_factor >= 0.0 && opts->drift_factor < 1.0))
        return vk__fail_msg(VK_ERR_LOCK_DRIFT_FACTOR_INVALID,
                            "lock drift factor must be between 0 (inclusive) and 1 (exclusive)");
    return VK_OK;
}
