/*
 * Command arguments: Strings go as their bytes, Symbols as their names,
 * Integers and Floats as decimal text. Everything is copied into one buffer
 * (inline for ordinary commands), because the command is sent without the
 * GVL while other Ruby threads may modify or free the original Strings.
 */
#include "vkrb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for any integer or "%.17g" double in decimal. */
#define NUMBER_TEXT_MAX 40

/* The bytes of one argument. Numbers are formatted into scratch. */
static const char *argument_bytes(VALUE item, size_t *len, char *scratch)
{
    if (RB_TYPE_P(item, T_STRING)) {
        *len = (size_t)RSTRING_LEN(item);
        return RSTRING_PTR(item);
    }
    if (RB_TYPE_P(item, T_SYMBOL)) {
        VALUE name = rb_sym2str(item);
        *len = (size_t)RSTRING_LEN(name);
        return RSTRING_PTR(name);
    }
    if (RB_FIXNUM_P(item)) {
        *len = (size_t)snprintf(scratch, NUMBER_TEXT_MAX, "%ld", FIX2LONG(item));
        return scratch;
    }
    if (RB_TYPE_P(item, T_BIGNUM)) {
        VALUE text = rb_big2str(item, 10);
        *len = (size_t)RSTRING_LEN(text);
        return RSTRING_PTR(text);
    }
    if (RB_FLOAT_TYPE_P(item)) {
        *len = (size_t)snprintf(scratch, NUMBER_TEXT_MAX, "%.17g", RFLOAT_VALUE(item));
        return scratch;
    }
    rb_raise(rb_eTypeError,
             "command arguments must be String, Symbol, Integer or Float, not %s",
             rb_obj_classname(item));
}

void vkrb_argv_fill(vkrb_argv *argv, const VALUE *items, long n)
{
    if (n <= 0)
        rb_raise(rb_eArgError, "a command needs at least its name");
    if (n > INT32_MAX)
        rb_raise(rb_eArgError, "too many command arguments");
    char scratch[NUMBER_TEXT_MAX];

    /* First pass: validate every argument and add up the bytes, so that
     * nothing is allocated before a TypeError can be raised. */
    size_t total = 0;
    for (long i = 0; i < n; i++) {
        size_t len = 0;
        argument_bytes(items[i], &len, scratch);
        total += len;
    }

    argv->argc = (int)n;
    argv->argv = argv->inline_argv;
    argv->lens = argv->inline_lens;
    argv->bytes = argv->inline_bytes;
    if (n > VKRB_INLINE_ARGS) {
        argv->argv = malloc((size_t)n * sizeof *argv->argv);
        argv->lens = malloc((size_t)n * sizeof *argv->lens);
    }
    if (total > VKRB_INLINE_BYTES)
        argv->bytes = malloc(total);
    if (!argv->argv || !argv->lens || !argv->bytes) {
        vkrb_argv_release(argv);
        rb_raise(rb_eNoMemError, "out of memory copying a command");
    }

    size_t offset = 0;
    for (long i = 0; i < n; i++) {
        size_t len = 0;
        const char *bytes = argument_bytes(items[i], &len, scratch);
        if (len)
            memcpy(argv->bytes + offset, bytes, len);
        argv->argv[i] = argv->bytes + offset;
        argv->lens[i] = len;
        offset += len;
    }
}

void vkrb_argv_release(vkrb_argv *argv)
{
    if (argv->argv != argv->inline_argv)
        free((void *)argv->argv);
    if (argv->lens != argv->inline_lens)
        free(argv->lens);
    if (argv->bytes != argv->inline_bytes)
        free(argv->bytes);
    argv->argv = argv->inline_argv;
    argv->lens = argv->inline_lens;
    argv->bytes = argv->inline_bytes;
}
