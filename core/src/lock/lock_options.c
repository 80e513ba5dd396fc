/*
 * Lock options: the defaults, the rate-limiter preset and validation with
 * the exact texts of SEMANTICS §4.
 *
 * The struct is versioned (libgit2's rule). A caller built against an
 * older header passes a shorter struct that carries its own version: every
 * version from 1 to VK_LOCK_OPTIONS_VERSION is accepted, the library reads
 * and writes only the fields of the caller's version, and the fields that
 * version lacks take their defaults. A new version appends its fields at
 * the end of the struct, bumps VK_LOCK_OPTIONS_VERSION and adds one line
 * per field to copy_fields().
 */
#include "lock/lock_options.h"

static const vk_lock_options defaults = VK_LOCK_OPTIONS_INIT;

static vk_status check_version(unsigned int version)
{
    if (version == 0)
        return vk__fail(VK_ERR_INVALID_ARGUMENT,
                        "lock options version 0 is not valid: start from "
                        "VK_LOCK_OPTIONS_INIT or vk_lock_options_init()");
    if (version > VK_LOCK_OPTIONS_VERSION)
        return vk__fail(VK_ERR_INVALID_ARGUMENT,
                        "lock options version %u is newer than this library "
                        "(which reads up to version %d)",
                        version, VK_LOCK_OPTIONS_VERSION);
    return VK_OK;
}

/* Copies the fields that exist in `version` from `from` to `to`. Either
 * may be a caller's struct of that version, which ends after its last
 * field: nothing past it is touched. */
static void copy_fields(vk_lock_options *to, const vk_lock_options *from, unsigned int version)
{
    /* Version 1. */
    to->expiry_ms = from->expiry_ms;
    to->tries = from->tries;
    to->retry_delay_ms = from->retry_delay_ms;
    to->drift_factor = from->drift_factor;
    to->auto_renew = from->auto_renew;
    /* Each later version adds its fields here, one line each:
     *     if (version >= 2) to->new_field = from->new_field;          */
    (void)version;
}

/* Fills a caller's struct of `version` from a full one. */
static vk_status fill(vk_lock_options *opts, unsigned int version, const vk_lock_options *from)
{
    if (!opts)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "lock options are nil");
    vk_status st = check_version(version);
    if (st != VK_OK)
        return st;
    opts->version = version;
    copy_fields(opts, from, version);
    return VK_OK;
}

vk_status vk_lock_options_init(vk_lock_options *opts, unsigned int version)
{
    return fill(opts, version, &defaults);
}

vk_status vk_lock_options_rate_limiter(vk_lock_options *opts, unsigned int version)
{
    /* Short-lived locks that give up quickly: a limiter must not queue. */
    vk_lock_options preset = defaults;
    preset.expiry_ms = 2000;
    preset.tries = 2;
    preset.retry_delay_ms = 100;
    preset.drift_factor = 0.01;
    return fill(opts, version, &preset);
}

/* A caller's struct of any accepted version, as a full one. */
static vk_status read_options(vk_lock_options *out, const vk_lock_options *opts)
{
    if (!opts)
        return vk__fail(VK_ERR_INVALID_ARGUMENT, "lock options are nil");
    vk_status st = check_version(opts->version);
    if (st != VK_OK)
        return st;
    *out = defaults;
    copy_fields(out, opts, opts->version);
    return VK_OK;
}

static vk_status check_rules(const vk_lock_options *opts)
{
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

vk_status vk_lock_options_validate(const vk_lock_options *opts)
{
    vk_lock_options full = defaults;   /* read_options fills it; gcc's -O2 cannot tell */
    vk_status st = read_options(&full, opts);
    return st != VK_OK ? st : check_rules(&full);
}

vk_status vk__lock_options_resolve(vk_lock_options *out, const vk_lock_options *opts)
{
    if (!opts) {
        *out = defaults;
        return VK_OK;
    }
    vk_status st = read_options(out, opts);
    return st != VK_OK ? st : check_rules(out);
}
