/*
 * VKClient::Session, native half: one vk_session (a pooled connection
 * pinned to its caller). Every call that may wait runs through
 * vkrb_blocking(), so Timeout.timeout or Thread#raise cancels it; a call
 * cancelled mid-way fails the session (the core closes its connection).
 * The Ruby half (lib/vkclient/session.rb) adds multi, watch and
 * transactions in redis-rb's shapes.
 */
#include "vkrb.h"

typedef struct session_box {
    vk_session *session;   /* NULL until opened, and once closed */
} session_box;

static void session_free(void *ptr)
{
    session_box *box = ptr;
    /* Closing gives the connection back (or closes it); inside the GC no
     * sink may run. */
    int was_muted = vkrb_sinks_mute(1);
    vk_session_close(box->session);
    vkrb_sinks_mute(was_muted);
    xfree(box);
}

static size_t session_size(const void *ptr)
{
    (void)ptr;
    return sizeof(session_box);
}

static const rb_data_type_t session_type = {
    .wrap_struct_name = "VKClient::Session",
    .function = {.dfree = session_free, .dsize = session_size},
    .flags = RUBY_TYPED_FREE_IMMEDIATELY,
};

static VALUE session_alloc(VALUE klass)
{
    session_box *box;
    VALUE obj = TypedData_Make_Struct(klass, session_box, &session_type, box);
    box->session = NULL;
    return obj;
}

/* The open session, or IOError (Ruby's error for a closed stream). */
static vk_session *open_session(VALUE self)
{
    session_box *box = rb_check_typeddata(self, &session_type);
    if (box->session == NULL)
        rb_raise(rb_eIOError, "the session is closed");
    return box->session;
}

typedef struct open_call {
    vk_client *client;
    vkrb_argv key;
    int has_key;
    vk_session *session;
} open_call;

static vk_status run_open(void *data, vk_context *ctx)
{
    open_call *call = data;
    return vk_session_open(&call->session, call->client, ctx,
                           call->has_key ? call->key.argv[0] : NULL,
                           call->has_key ? call->key.lens[0] : 0);
}

/* Session#_native_open(client, key): key nil or a String/Symbol. */
static VALUE session_native_open(VALUE self, VALUE client, VALUE key)
{
    session_box *box = rb_check_typeddata(self, &session_type);
    if (box->session)
        rb_raise(rb_eRuntimeError, "the session is already open");
    if (!rb_obj_is_kind_of(client, vkrb_cClient))
        rb_raise(rb_eTypeError, "a VKClient::Client is needed");
    open_call call = {vkrb_client_handle(client), {0}, !NIL_P(key), NULL};
    if (call.has_key)
        vkrb_argv_fill(&call.key, &key, 1);
    vk_status st = vkrb_blocking(run_open, &call);
    if (call.has_key)
        vkrb_argv_release(&call.key);
    vkrb_sinks_reraise_pending();
    if (st != VK_OK)
        vkrb_raise(st);
    box->session = call.session;
    return self;
}

typedef struct command_call {
    vk_session *session;
    vkrb_argv args;
    vk_reply *reply;
} command_call;

static vk_status run_command(void *data, vk_context *ctx)
{
    command_call *call = data;
    return vk_session_command(&call->reply, call->session, ctx, call->args.argc,
                              call->args.argv, call->args.lens);
}

/* Session#call(*args): one command on the session's connection. An error
 * reply raises ResponseError; an EXEC aborted by WATCH returns nil, as
 * redis-rb's does. */
static VALUE session_call(int argc, VALUE *argv, VALUE self)
{
    command_call call = {open_session(self), {0}, NULL};
    vkrb_argv_fill(&call.args, argv, argc);
    vk_status st = vkrb_blocking(run_command, &call);
    vkrb_argv_release(&call.args);
    vkrb_sinks_reraise_pending();
    if (st == VK_ERR_WATCH_CONFLICT)
        return Qnil;
    if (st != VK_OK) {
        vk_reply_free(call.reply);
        vkrb_raise(st);
    }
    int is_error = vk_reply_get_type(call.reply) == VK_REPLY_ERROR;
    VALUE result = vkrb_take_reply(call.reply);
    if (is_error)
        rb_exc_raise(result);
    return result;
}

typedef struct pipeline_call {
    vk_session *session;
    vk_pipeline *pipeline;
    vk_reply *reply;
} pipeline_call;

static vk_status run_pipeline(void *data, vk_context *ctx)
{
    pipeline_call *call = data;
    return vk_session_pipeline_exec(&call->reply, call->session, call->pipeline, ctx);
}

/* Session#_pipeline_exec(client, commands, transaction): the commands on
 * the session's connection; a transaction gives EXEC's results, or nil
 * when a watched key changed. */
static VALUE session_pipeline_exec(VALUE self, VALUE client, VALUE commands, VALUE transaction)
{
    pipeline_call call = {open_session(self), NULL, NULL};
    call.pipeline = vkrb_pipeline_of(vkrb_client_handle(client), commands, RTEST(transaction));
    vk_status st = vkrb_blocking(run_pipeline, &call);
    vk_pipeline_free(call.pipeline);
    vkrb_sinks_reraise_pending();
    if (st == VK_ERR_WATCH_CONFLICT)
        return Qnil;
    if (st != VK_OK) {
        vk_reply_free(call.reply);
        vkrb_raise(st);
    }
    return vkrb_take_reply(call.reply);
}

static vk_status run_close(void *data, vk_context *ctx)
{
    (void)ctx;
    vk_session_close(data);
    return VK_OK;
}

/* Session#close: gives the connection back (see vk_session_close).
 * Closing twice is harmless. */
static VALUE session_close(VALUE self)
{
    session_box *box = rb_check_typeddata(self, &session_type);
    vk_session *session = box->session;
    if (session != NULL) {
        /* An interrupt pending before the close starts raises here and
         * leaves the session to the GC, which closes it. */
        vkrb_blocking(run_close, session);
        box->session = NULL;
        vkrb_sinks_reraise_pending();
    }
    return Qnil;
}

static VALUE session_is_closed(VALUE self)
{
    session_box *box = rb_check_typeddata(self, &session_type);
    return box->session == NULL ? Qtrue : Qfalse;
}

void vkrb_init_session(void)
{
    vkrb_cSession = rb_define_class_under(vkrb_mVKClient, "Session", rb_cObject);
    rb_define_alloc_func(vkrb_cSession, session_alloc);
    rb_define_method(vkrb_cSession, "call", session_call, -1);
    rb_define_method(vkrb_cSession, "close", session_close, 0);
    rb_define_method(vkrb_cSession, "closed?", session_is_closed, 0);
    rb_define_private_method(vkrb_cSession, "_native_open", session_native_open, 2);
    rb_define_private_method(vkrb_cSession, "_pipeline_exec", session_pipeline_exec, 3);
}
