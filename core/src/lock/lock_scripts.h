/*
 * The Lua scripts of the lock protocol. Every language binding goes through
 * these same scripts, so holders in different languages exclude each other.
 *
 * Keys: KEYS[1] is the lock key, KEYS[2] its fencing counter, which shares
 * the lock key's cluster slot (see new_lock in lock.c). Taking the lock
 * needs no script: it is SET NX PX and INCR of the counter, pipelined.
 */
#ifndef VK_LOCK_SCRIPTS_H
#define VK_LOCK_SCRIPTS_H

/* ARGV: value, floor. While the lock is ours, raises the fencing counter
 * to at least floor; returns 1 when ours, else 0. */
#define VK_LOCK_SCRIPT_RAISE                                                \
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"                       \
    "  local current = tonumber(redis.call('GET', KEYS[2]) or '0')\n"       \
    "  if current < tonumber(ARGV[2]) then\n"                               \
    "    redis.call('SET', KEYS[2], ARGV[2])\n"                             \
    "  end\n"                                                               \
    "  return 1\n"                                                          \
    "end\n"                                                                 \
    "return 0\n"

/* ARGV: value. Compare-and-delete: 1 when it was ours and is now gone. */
#define VK_LOCK_SCRIPT_RELEASE                                              \
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"                       \
    "  return redis.call('DEL', KEYS[1])\n"                                 \
    "end\n"                                                                 \
    "return 0\n"

/* ARGV: value, expiry ms. Compare-and-PEXPIRE: 1 when ours. */
#define VK_LOCK_SCRIPT_EXTEND                                               \
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"                       \
    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"                    \
    "end\n"                                                                 \
    "return 0\n"

#endif /* VK_LOCK_SCRIPTS_H */
