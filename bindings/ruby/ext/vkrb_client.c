/*
 * VKClient::Client, native half: the handle, the command hot path
 * (Client#call goes straight here), pipelines, status snapshots and the
 * queued events. The Ruby half (lib/vkclient/client.rb) builds the config
 * and adds the idiomatic API around these methods.
 */
#include "vkrb.h"

typedef struct client_box {
    vk_client *client;
} client_box;

static void client_free(void *ptr)
{
    client_box *box = ptr;
    /* Joins the core's background threads; they never wait for Ruby. Runs
     * inside the GC: the sinks must not be called. */
    int was_muted = vkrb_sinks_mute(1);
    vk_client_free(box->client);
    vkrb_sinks_mute(was_muted);
    xfree(box);
}

static size_t client_size(const void *ptr)
{
    (void)ptr;
    return sizeof(client_box);
}

static const rb_data_type_t client_type = {
    .wrap_struct_name = "VKClient::Client",
    .function = {.dfree = client_free, .dsize = client_size},
    .flags = RUBY_TYPED_FREE_IMMEDIATELY,
};

static VALUE client_alloc(VALUE klass)
{
    client_box *box;
    VALUE obj = TypedData_Make_Struct(klass, client_box, &client_type, box);
    box->client = NULL;
    return obj;
}

/* NULL when the client was never opened: every core call then fails with
 * VK_ERR_NIL_CLIENT ("redis client is nil"). */
vk_client *vkrb_client_handle(VALUE obj)
{
    client_box *box = rb_check_typeddata(obj, &client_type);
    return box->client;
}

/* ---- open / connect / close ---------------------------------------------- */

typedef struct open_call {
    const vk_config *cfg;
    vk_client *client;
} open_call;

static vk_status run_open(void *data, vk_context *ctx)
{
    (void)ctx; /* vk_client_new has no context: dial timeouts bound it */
    open_call *call = data;
    return vk_client_new(&call->client, call->cfg);
}

/* Client#_native_open(config): connects and pings (SEMANTICS §2 New). */
static VALUE client_native_open(VALUE self, VALUE config)
{
    client_box *box = rb_check_typeddata(self, &client_type);
    if (box->client)
        rb_raise(rb_eRuntimeError, "the client is already open");
    open_call call = {vkrb_unwrap_config(config), NULL};
    vk_status st = vkrb_blocking(run_open, &call);
    vkrb_sinks_reraise_pending();
    if (st != VK_OK)
        vkrb_raise(st);
    box->client = call.client;
    return self;
}

static vk_status run_connect(void *data, vk_context *ctx)
{
    return vk_client_connect(data, ctx);
}

static VALUE client_connect(VALUE self)
{
    vk_status st = vkrb_blocking(run_connect, vkrb_client_handle(self));
    vkrb_sinks_reraise_pending();
    if (st != VK_OK)
        vkrb_raise(st);
    return self;
}

static vk_status run_close(void *data, vk_context *ctx)
{
    (void)ctx;
    return vk_client_close(data);
}

static VALUE client_native_close(VALUE self)
{
    vk_client *client = vkrb_client_handle(self);
    if (!client)
        return Qnil; /* never opened: closing is harmless */
    vk_status st = vkrb_blocking(run_close, client);
    vkrb_sinks_reraise_pending();
    if (st != VK_OK)
        vkrb_raise(st);
    return Qnil;
}

static VALUE client_is_connected(VALUE self)
{
    return vk_client_is_connected(vkrb_client_handle(self)) ? Qtrue : Qfalse;
}

/* ---- commands -------------------------------------------------------------- */

typedef struct command_call {
    vk_client *client;
    vkrb_argv args;
    vk_reply *reply;
} command_call;

static vk_status run_command(void *data, vk_context *ctx)
{
    command_call *call = data;
    return vk_client_command(&call->reply, call->client, ctx, call->args.argc,
                             call->args.argv, call->args.lens);
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

VALUE vkrb_take_reply(vk_reply *reply)
{
    return rb_ensure(convert_reply, (VALUE)reply, free_reply, (VALUE)reply);
}

static VALUE take_reply(vk_reply *reply)
{
    return vkrb_take_reply(reply);
}

/* Client#call(*args): the hot path. An error reply raises ResponseError. */
static VALUE client_call(int argc, VALUE *argv, VALUE self)
{
    command_call call;
    call.client = vkrb_client_handle(self);
    call.reply = NULL;
    vkrb_argv_fill(&call.args, argv, argc);
    vk_status st = vkrb_blocking(run_command, &call);
    vkrb_argv_release(&call.args);
    if (st != VK_OK) {
        vk_reply_free(call.reply);
        vkrb_sinks_reraise_pending();
        vkrb_raise(st);
    }
    int is_error = vk_reply_get_type(call.reply) == VK_REPLY_ERROR;
    VALUE result = take_reply(call.reply);
    vkrb_sinks_reraise_pending();
    if (is_error)
        rb_exc_raise(result);
    return result;
}

/* ---- pipelines ------------------------------------------------------------- */

typedef struct pipeline_call {
    vk_pipeline *pipeline;
    VALUE commands;
    vk_reply *reply;
} pipeline_call;

static VALUE append_commands(VALUE arg)
{
    pipeline_call *call = (pipeline_call *)arg;
    long n = RARRAY_LEN(call->commands);
    for (long i = 0; i < n; i++) {
        VALUE command = rb_check_array_type(RARRAY_AREF(call->commands, i));
        if (NIL_P(command))
            rb_raise(rb_eTypeError, "a pipelined command must be an Array of arguments");
        vkrb_argv args;
        vkrb_argv_fill(&args, RARRAY_CONST_PTR(command), RARRAY_LEN(command));
        vk_status st = vk_pipeline_append(call->pipeline, args.argc, args.argv, args.lens);
        vkrb_argv_release(&args);
        if (st != VK_OK)
            vkrb_raise(st);
    }
    return Qnil;
}

static vk_status run_pipeline(void *data, vk_context *ctx)
{
    pipeline_call *call = data;
    return vk_pipeline_exec(&call->reply, call->pipeline, ctx);
}

vk_pipeline *vkrb_pipeline_of(vk_client *client, VALUE commands, int transaction)
{
    Check_Type(commands, T_ARRAY);
    pipeline_call call = {NULL, commands, NULL};
    vk_status st = vk_pipeline_new(&call.pipeline, client);
    if (st == VK_OK && transaction)
        st = vk_pipeline_set_transaction(call.pipeline, 1);
    if (st != VK_OK) {
        vk_pipeline_free(call.pipeline);
        vkrb_raise(st);
    }
    int state = 0;
    rb_protect(append_commands, (VALUE)&call, &state);
    if (state) {
        vk_pipeline_free(call.pipeline);
        rb_jump_tag(state);
    }
    return call.pipeline;
}

/* Client#_pipeline_exec(commands, transaction): one round trip; an Array
 * with one reply per command (a transaction: EXEC's results), error
 * replies as ResponseError objects in place. */
static VALUE client_pipeline_exec(VALUE self, VALUE commands, VALUE transaction)
{
    pipeline_call call = {NULL, commands, NULL};
    call.pipeline = vkrb_pipeline_of(vkrb_client_handle(self), commands, RTEST(transaction));
    vk_status st = vkrb_blocking(run_pipeline, &call);
    vk_pipeline_free(call.pipeline);
    if (st != VK_OK) {
        vk_reply_free(call.reply);
        vkrb_sinks_reraise_pending();
        vkrb_raise(st);
    }
    VALUE result = take_reply(call.reply);
    vkrb_sinks_reraise_pending();
    return result;
}

/* ---- status and events ----------------------------------------------------- */

static VALUE cstr_or_nil(const char *s)
{
    return s != NULL ? rb_utf8_str_new_cstr(s) : Qnil;
}

/* Builds the _snapshot array; may raise (memory), so it runs under
 * rb_ensure() and the snapshot is freed either way. */
static VALUE snapshot_to_array(VALUE data)
{
    const vk_snapshot *snap = (const vk_snapshot *)data;
    VALUE nodes = rb_hash_new();
    for (size_t i = 0; i < vk_snapshot_node_count(snap); i++)
        rb_hash_aset(nodes, cstr_or_nil(vk_snapshot_node_address(snap, i)),
                     INT2NUM(vk_snapshot_node_slots(snap, i)));
    VALUE result = rb_ary_new_capa(11);
    rb_ary_push(result, vk_snapshot_connected(snap) ? Qtrue : Qfalse);
    rb_ary_push(result, cstr_or_nil(vk_snapshot_last_refresh_error(snap)));
    rb_ary_push(result, LL2NUM(vk_snapshot_last_refresh_at_ms(snap)));
    rb_ary_push(result, vk_snapshot_refresh_loop_running(snap) ? Qtrue : Qfalse);
    rb_ary_push(result, cstr_or_nil(vk_snapshot_mode(snap)));
    rb_ary_push(result, cstr_or_nil(vk_snapshot_master_address(snap)));
    rb_ary_push(result, ULL2NUM(vk_snapshot_master_switches(snap)));
    rb_ary_push(result, ULL2NUM(vk_snapshot_slot_map_refreshes(snap)));
    rb_ary_push(result, ULL2NUM(vk_snapshot_moved_redirects(snap)));
    rb_ary_push(result, ULL2NUM(vk_snapshot_ask_redirects(snap)));
    rb_ary_push(result, rb_hash_freeze(nodes));
    return result;
}

static VALUE snapshot_release(VALUE data)
{
    vk_snapshot_free((vk_snapshot *)data);
    return Qnil;
}

/* Client#_snapshot: [connected, last_refresh_error, last_refresh_at_ms,
 * refresh_loop_running, mode, master_address, master_switches,
 * slot_map_refreshes, moved_redirects, ask_redirects, {node => slots}]. */
static VALUE client_snapshot(VALUE self)
{
    vk_snapshot *snap = NULL;
    vk_status st = vk_client_snapshot(&snap, vkrb_client_handle(self));
    if (st != VK_OK)
        vkrb_raise(st);
    return rb_ensure(snapshot_to_array, (VALUE)snap, snapshot_release, (VALUE)snap);
}

/* Client#_poll_events: delivers the queued events on this thread. */
static VALUE client_poll_events(VALUE self)
{
    vk_client *client = vkrb_client_handle(self);
    int delivered = client ? vk_client_poll_events(client, 0) : 0;
    vkrb_sinks_reraise_pending();
    return INT2NUM(delivered < 0 ? 0 : delivered);
}

typedef struct wait_call {
    vk_client *client;
    int64_t timeout_ms;
} wait_call;

static vk_status run_wait(void *data, vk_context *ctx)
{
    wait_call *call = data;
    return vk_client_wait_events(call->client, ctx, call->timeout_ms);
}

/* Client#_wait_events(seconds): true when events are pending, false after
 * the timeout. Interruptible (the event thread is stopped by Thread#kill). */
static VALUE client_wait_events(VALUE self, VALUE seconds)
{
    wait_call call = {vkrb_client_handle(self), (int64_t)(NUM2DBL(seconds) * 1000.0)};
    if (!call.client)
        return Qfalse;
    vk_status st = vkrb_blocking(run_wait, &call);
    if (st == VK_OK)
        return Qtrue;
    if (st == VK_ERR_TIMEOUT)
        return Qfalse;
    vkrb_raise(st);
}

void vkrb_init_client(void)
{
    vkrb_cClient = rb_define_class_under(vkrb_mVKClient, "Client", rb_cObject);
    rb_define_alloc_func(vkrb_cClient, client_alloc);
    rb_define_method(vkrb_cClient, "call", client_call, -1);
    rb_define_method(vkrb_cClient, "connect", client_connect, 0);
    rb_define_method(vkrb_cClient, "connected?", client_is_connected, 0);
    rb_define_private_method(vkrb_cClient, "_native_open", client_native_open, 1);
    rb_define_private_method(vkrb_cClient, "_native_close", client_native_close, 0);
    rb_define_private_method(vkrb_cClient, "_pipeline_exec", client_pipeline_exec, 2);
    rb_define_private_method(vkrb_cClient, "_snapshot", client_snapshot, 0);
    rb_define_private_method(vkrb_cClient, "_poll_events", client_poll_events, 0);
    rb_define_private_method(vkrb_cClient, "_wait_events", client_wait_events, 1);
}
