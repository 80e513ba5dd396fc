/*
 * Reply trees to Ruby objects, converted at once so that the C tree can be
 * freed before the call returns: bulk strings are binary Strings, status
 * replies UTF-8 Strings, integers Integers, nil nil, arrays/sets/pushes
 * Arrays, maps Hashes, doubles Floats, booleans true/false, big numbers
 * Integers. Error replies become VKClient::ResponseError objects.
 */
#include "vkrb.h"

static VALUE string_of(const vk_reply *reply, int binary)
{
    size_t len = 0;
    const char *bytes = vk_reply_get_string(reply, &len);
    return binary ? rb_str_new(bytes, (long)len) : rb_utf8_str_new(bytes, (long)len);
}

static VALUE array_of(const vk_reply *reply)
{
    size_t n = vk_reply_get_length(reply);
    VALUE array = rb_ary_new_capa((long)n);
    for (size_t i = 0; i < n; i++)
        rb_ary_push(array, vkrb_reply_to_ruby(vk_reply_get_element(reply, i)));
    return array;
}

static VALUE hash_of(const vk_reply *reply)
{
    size_t n = vk_reply_get_length(reply);
    VALUE hash = rb_hash_new();
    for (size_t i = 0; i + 1 < n; i += 2)
        rb_hash_aset(hash, vkrb_reply_to_ruby(vk_reply_get_element(reply, i)),
                     vkrb_reply_to_ruby(vk_reply_get_element(reply, i + 1)));
    return hash;
}

VALUE vkrb_reply_to_ruby(const vk_reply *reply)
{
    switch (vk_reply_get_type(reply)) {
    case VK_REPLY_STRING:
        return string_of(reply, 1);
    case VK_REPLY_STATUS:
    case VK_REPLY_VERB:
        return string_of(reply, 0);
    case VK_REPLY_INTEGER:
        return LL2NUM(vk_reply_get_integer(reply));
    case VK_REPLY_DOUBLE:
        return DBL2NUM(vk_reply_get_double(reply));
    case VK_REPLY_BOOL:
        return vk_reply_get_integer(reply) ? Qtrue : Qfalse;
    case VK_REPLY_BIGNUM:
        return rb_str_to_inum(string_of(reply, 0), 10, 0);
    case VK_REPLY_ARRAY:
    case VK_REPLY_SET:
    case VK_REPLY_PUSH:
        return array_of(reply);
    case VK_REPLY_MAP:
    case VK_REPLY_ATTR:
        return hash_of(reply);
    case VK_REPLY_ERROR: {
        size_t len = 0;
        const char *text = vk_reply_get_string(reply, &len);
        return vkrb_response_error(text, len);
    }
    case VK_REPLY_NIL:
    default:
        return Qnil;
    }
}
