/*
 * VKClient::Script's native half (one vk_script: the source and its SHA-1,
 * computed once) and Client#_run_script, which runs it with the core's
 * EVALSHA-then-EVAL (vk_script_run) without the GVL. The Ruby half
 * (lib/vkclient/script.rb) gives it redis-rb's shape.
 */
#include "vkrb.h"

static void script_free(void *ptr)
{
    vk_script_free(ptr);
}

static const rb_data_type_t script_type = {
    .wrap_struct_name = "VKClient::Script",
    .function = {.dfree = script_free},
    .flags = RUBY_TYPED_FREE_IMMEDIATELY,
};

static VALUE script_alloc(VALUE klass)
{
    return TypedData_Wrap_Struct(klass, &script_type, NULL);
}

static vk_script *script_handle(VALUE obj)
{
    vk_script *script = rb_check_typeddata(obj, &script_type);
    if (script == NULL)
        rb_raise(rb_eArgError, "the script is not initialised");
    return script;
}

/* Script#_native_init(source): computes the SHA-1 once. */
static VALUE script_native_init(VALUE self, VALUE source)
{
    StringValue(source);
    if (DATA_PTR(self) != NULL)
        rb_raise(rb_eArgError, "the script is already initialised");
    vk_script *script = NULL;
    vk_status st = vk_script_new(&script, RSTRING_PTR(source), (size_t)RSTRING_LEN(source));
    if (st != VK_OK)
        vkrb_raise(st);
    DATA_PTR(self) = script;
    return self;
}

static VALUE script_sha(VALUE self)
{
    return rb_usascii_str_new_cstr(vk_script_sha1(script_handle(self)));
}

typedef struct script_call {
    vk_client *client;
    vk_script *script;
    int nkeys;
    vkrb_argv words;    /* the keys, then the args */
    vk_reply *reply;
} script_call;

static vk_status run_script(void *data, vk_context *ctx)
{
    script_call *call = data;
    int nargs = call->words.argc - call->nkeys;
    return vk_script_run(&call->reply, call->client, ctx, call->script, call->nkeys,
                         call->words.argv, call->words.lens, nargs,
                         call->words.argv + call->nkeys, call->words.lens + call->nkeys);
}

static VALUE convert_reply(VALUE reply)
{
    return vkrb_reply_to_ruby((const vk_reply *)reply);
}

static VALUE free_reply(VALUE reply)
{
    vk_reply_free((vk_reply *)reply);
    return Qnil;
}

/* Client#_run_script(script, keys, argv): the reply; an error reply (the
 * script's redis.error_reply, a failing redis.call) raises ResponseError. */
static VALUE client_run_script(VALUE self, VALUE script, VALUE keys, VALUE argv)
{
    script_call call = {vkrb_client_handle(self), script_handle(script), 0, {0}, NULL};
    keys = rb_Array(keys);
    argv = rb_Array(argv);
    VALUE words = rb_ary_plus(keys, argv);
    long n = RARRAY_LEN(words);
    if (n > INT32_MAX)
        rb_raise(rb_eArgError, "too many keys and args");
    call.nkeys = (int)RARRAY_LEN(keys);
    if (n > 0)
        vkrb_argv_fill(&call.words, RARRAY_CONST_PTR(words), n);
    RB_GC_GUARD(words);
    vk_status st = vkrb_blocking(run_script, &call);
    if (n > 0)
        vkrb_argv_release(&call.words);
    if (st != VK_OK) {
        vk_reply_free(call.reply);
        vkrb_sinks_reraise_pending();
        vkrb_raise(st);
    }
    int is_error = vk_reply_get_type(call.reply) == VK_REPLY_ERROR;
    VALUE result = rb_ensure(convert_reply, (VALUE)call.reply, free_reply, (VALUE)call.reply);
    vkrb_sinks_reraise_pending();
    if (is_error)
        rb_exc_raise(result);
    return result;
}

void vkrb_init_script(void)
{
    VALUE cScript = rb_define_class_under(vkrb_mVKClient, "Script", rb_cObject);
    rb_define_alloc_func(cScript, script_alloc);
    rb_define_private_method(cScript, "_native_init", script_native_init, 1);
    rb_define_method(cScript, "sha", script_sha, 0);
    rb_define_private_method(vkrb_cClient, "_run_script", client_run_script, 3);
}
