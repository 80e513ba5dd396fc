/*
 * VKClient::LockManager and VKClient::LockHandle, native half. Acquire,
 * release and extend wait on the network, so they run without the GVL;
 * with_lock runs the Ruby block with the GVL taken back, and an exception
 * raised by the block is kept aside while the core releases the lock, then
 * raised: a StandardError wrapped as LockFunctionError (its cause the
 * original), anything else unchanged.
 */
#include "vkrb.h"

#include <stdlib.h>
#include <string.h>

/* ---- handles ---------------------------------------------------------------- */

typedef struct handle_box {
    vk_lock *lock;
    int borrowed; /* lent by with_lock for the block only; not freed here */
    /* The LockManager it came from, kept alive with its clients: the core
     * may log through their sinks while the handle is used. */
    VALUE manager;
} handle_box;

static void handle_mark(void *ptr)
{
    handle_box *box = ptr;
    rb_gc_mark(box->manager);
}

static void handle_free(void *ptr)
{
    handle_box *box = ptr;
    int was_muted = vkrb_sinks_mute(1); /* inside the GC: no Ruby */
    if (!box->borrowed)
        vk_lock_free(box->lock);
    vkrb_sinks_mute(was_muted);
    xfree(box);
}

static size_t handle_size(const void *ptr)
{
    (void)ptr;
    return sizeof(handle_box);
}

static const rb_data_type_t handle_type = {
    .wrap_struct_name = "VKClient::LockHandle",
    .function = {.dmark = handle_mark, .dfree = handle_free, .dsize = handle_size},
    .flags = RUBY_TYPED_FREE_IMMEDIATELY,
};

static VALUE handle_alloc(VALUE klass)
{
    handle_box *box;
    VALUE obj = TypedData_Make_Struct(klass, handle_box, &handle_type, box);
    box->lock = NULL;
    box->borrowed = 0;
    box->manager = Qnil;
    return obj;
}

static VALUE wrap_lock(vk_lock *lock, int borrowed, VALUE manager)
{
    VALUE obj = handle_alloc(vkrb_cLockHandle);
    handle_box *box = rb_check_typeddata(obj, &handle_type);
    box->lock = lock;
    box->borrowed = borrowed;
    box->manager = manager;
    return obj;
}

/* NULL for a handle whose with_lock block has ended: the core then answers
 * "lock handle is nil or not initialized". */
static vk_lock *lock_of(VALUE obj)
{
    handle_box *box = rb_check_typeddata(obj, &handle_type);
    return box->lock;
}

static vk_status run_unlock(void *data, vk_context *ctx)
{
    return vk_lock_unlock(data, ctx);
}

/* LockHandle#unlock: compare-and-delete; LockNotHeldError when it expired
 * or was taken over. */
static VALUE handle_unlock(VALUE self)
{
    vk_status st = vkrb_blocking(run_unlock, lock_of(self));
    vkrb_sinks_reraise_pending();
    if (st != VK_OK)
        vkrb_raise(st);
    return Qnil;
}

typedef struct extend_call {
    vk_lock *lock;
    int64_t expiry_ms;
} extend_call;

static vk_status run_extend(void *data, vk_context *ctx)
{
    extend_call *call = data;
    return vk_lock_extend(call->lock, ctx, call->expiry_ms);
}

/* LockHandle#_extend_ms(ms) (LockHandle#extend(seconds) in Ruby). */
static VALUE handle_extend_ms(VALUE self, VALUE ms)
{
    extend_call call = {lock_of(self), NUM2LL(ms)};
    vk_status st = vkrb_blocking(run_extend, &call);
    vkrb_sinks_reraise_pending();
    if (st != VK_OK)
        vkrb_raise(st);
    return self;
}

static VALUE handle_validity_ms(VALUE self)
{
    return LL2NUM(vk_lock_validity_ms(lock_of(self)));
}

static VALUE handle_fencing_token(VALUE self)
{
    return LL2NUM(vk_lock_fencing_token(lock_of(self)));
}

static VALUE handle_key(VALUE self)
{
    size_t len = 0;
    const char *key = vk_lock_key(lock_of(self), &len);
    return key ? rb_str_new(key, (long)len) : Qnil;
}

static VALUE handle_is_lost(VALUE self)
{
    return vk_lock_is_lost(lock_of(self)) ? Qtrue : Qfalse;
}

/* ---- options ---------------------------------------------------------------- */

/* nil, or [expiry_ms, tries, retry_delay_ms, drift_factor, auto_renew] as
 * built by VKClient::LockOptions#to_native. */
static int options_from_ruby(VALUE value, vk_lock_options *opts)
{
    vk_lock_options_init(opts, VK_LOCK_OPTIONS_VERSION);
    if (NIL_P(value))
        return 0;
    Check_Type(value, T_ARRAY);
    if (RARRAY_LEN(value) != 5)
        rb_raise(rb_eArgError, "lock options must have 5 fields");
    opts->expiry_ms = NUM2LL(RARRAY_AREF(value, 0));
    opts->tries = NUM2INT(RARRAY_AREF(value, 1));
    opts->retry_delay_ms = NUM2LL(RARRAY_AREF(value, 2));
    opts->drift_factor = NUM2DBL(RARRAY_AREF(value, 3));
    opts->auto_renew = RTEST(RARRAY_AREF(value, 4));
    return 1;
}

static VALUE options_to_ruby(const vk_lock_options *opts)
{
    return rb_ary_new_from_args(5, LL2NUM(opts->expiry_ms), INT2NUM(opts->tries),
                                LL2NUM(opts->retry_delay_ms), DBL2NUM(opts->drift_factor),
                                opts->auto_renew ? Qtrue : Qfalse);
}

static VALUE native_lock_options_default(VALUE self)
{
    (void)self;
    vk_lock_options opts;
    vk_status st = vk_lock_options_init(&opts, VK_LOCK_OPTIONS_VERSION);
    if (st != VK_OK)
        vkrb_raise(st);
    return options_to_ruby(&opts);
}

static VALUE native_lock_options_rate_limiter(VALUE self)
{
    (void)self;
    vk_lock_options opts;
    vk_status st = vk_lock_options_rate_limiter(&opts, VK_LOCK_OPTIONS_VERSION);
    if (st != VK_OK)
        vkrb_raise(st);
    return options_to_ruby(&opts);
}

static VALUE native_lock_options_validate(VALUE self, VALUE value)
{
    (void)self;
    vk_lock_options opts;
    options_from_ruby(value, &opts);
    vk_status st = vk_lock_options_validate(&opts);
    if (st != VK_OK)
        vkrb_raise(st);
    return Qtrue;
}

/* ---- the manager ------------------------------------------------------------ */

typedef struct manager_box {
    vk_lock_manager *manager;
} manager_box;

static void manager_free(void *ptr)
{
    manager_box *box = ptr;
    int was_muted = vkrb_sinks_mute(1); /* inside the GC: no Ruby */
    vk_lock_manager_free(box->manager);
    vkrb_sinks_mute(was_muted);
    xfree(box);
}

static size_t manager_size(const void *ptr)
{
    (void)ptr;
    return sizeof(manager_box);
}

static const rb_data_type_t manager_type = {
    .wrap_struct_name = "VKClient::LockManager",
    .function = {.dfree = manager_free, .dsize = manager_size},
    .flags = RUBY_TYPED_FREE_IMMEDIATELY,
};

static VALUE manager_alloc(VALUE klass)
{
    manager_box *box;
    VALUE obj = TypedData_Make_Struct(klass, manager_box, &manager_type, box);
    box->manager = NULL;
    return obj;
}

static vk_lock_manager *manager_of(VALUE obj)
{
    manager_box *box = rb_check_typeddata(obj, &manager_type);
    return box->manager;
}

typedef struct manager_new_call {
    vk_client **clients;
    size_t n;
    vk_lock_manager *manager;
} manager_new_call;

static vk_status run_manager_new(void *data, vk_context *ctx)
{
    (void)ctx;
    manager_new_call *call = data;
    if (call->n == 1)
        return vk_lock_manager_new(&call->manager, call->clients[0]);
    return vk_lock_manager_new_quorum(&call->manager, (vk_client *const *)call->clients,
                                      call->n);
}

/* LockManager#_native_init(clients): one client, or several for a quorum.
 * The Ruby half keeps the client objects referenced. */
static VALUE manager_native_init(VALUE self, VALUE clients)
{
    Check_Type(clients, T_ARRAY);
    long n = RARRAY_LEN(clients);
    manager_new_call call = {NULL, (size_t)n, NULL};
    vk_client *stack_clients[16];
    call.clients = n <= 16 ? stack_clients : ALLOC_N(vk_client *, n);
    for (long i = 0; i < n; i++) {
        VALUE client = RARRAY_AREF(clients, i);
        call.clients[i] = NIL_P(client) ? NULL : vkrb_client_handle(client);
    }
    vk_status st;
    if (n == 0) {
        /* The core's own answer for "no client". */
        st = vk_lock_manager_new(&call.manager, NULL);
    } else {
        st = vkrb_blocking(run_manager_new, &call);
    }
    if (call.clients != stack_clients)
        xfree(call.clients);
    vkrb_sinks_reraise_pending();
    if (st != VK_OK)
        vkrb_raise(st);
    rb_check_typeddata(self, &manager_type);
    manager_box *box = DATA_PTR(self);
    vk_lock_manager_free(box->manager);
    box->manager = call.manager;
    return self;
}

typedef struct acquire_call {
    vk_lock_manager *manager;
    const char *key;
    size_t keylen;
    vk_lock_options opts;
    int has_opts;
    int try_once;
    vk_lock *lock;
} acquire_call;

static vk_status run_acquire(void *data, vk_context *ctx)
{
    acquire_call *call = data;
    if (call->try_once)
        return vk_lock_manager_try_lock(&call->lock, call->manager, ctx, call->key,
                                        call->keylen);
    return vk_lock_manager_acquire(&call->lock, call->manager, ctx, call->key, call->keylen,
                                   call->has_opts ? &call->opts : NULL);
}

/* The key, copied out of its String so that it stays readable without the
 * GVL (another thread may change the String meanwhile). */
#define INLINE_KEY_BYTES 256
typedef struct key_copy {
    char *bytes;
    size_t len;
    char inline_bytes[INLINE_KEY_BYTES];
} key_copy;

/* Raises TypeError for a non-String before anything is allocated. */
static void key_copy_fill(key_copy *k, VALUE key)
{
    if (!RB_TYPE_P(key, T_STRING))
        rb_raise(rb_eTypeError, "lock key must be a String, not %s", rb_obj_classname(key));
    k->len = (size_t)RSTRING_LEN(key);
    k->bytes = k->len <= INLINE_KEY_BYTES ? k->inline_bytes : malloc(k->len);
    if (!k->bytes)
        rb_raise(rb_eNoMemError, "out of memory copying a lock key");
    memcpy(k->bytes, RSTRING_PTR(key), k->len);
}

static void key_copy_release(key_copy *k)
{
    if (k->bytes != k->inline_bytes)
        free(k->bytes);
    k->bytes = k->inline_bytes;
}

static VALUE acquire(VALUE self, VALUE key, VALUE options, int try_once)
{
    acquire_call call = {manager_of(self), NULL, 0, {0}, 0, try_once, NULL};
    call.has_opts = options_from_ruby(options, &call.opts);
    key_copy k;
    key_copy_fill(&k, key);
    call.key = k.bytes;
    call.keylen = k.len;
    vk_status st = vkrb_blocking(run_acquire, &call);
    key_copy_release(&k);
    if (st != VK_OK) {
        vk_lock_free(call.lock);
        vkrb_sinks_reraise_pending();
        vkrb_raise(st);
    }
    vkrb_sinks_reraise_pending();
    return call.lock ? wrap_lock(call.lock, 0, self) : Qnil;
}

/* LockManager#try_lock(key): a LockHandle, or nil when the lock is busy. */
static VALUE manager_try_lock(VALUE self, VALUE key)
{
    return acquire(self, key, Qnil, 1);
}

/* LockManager#_acquire(key, options): a LockHandle (retries per options). */
static VALUE manager_acquire(VALUE self, VALUE key, VALUE options)
{
    return acquire(self, key, options, 0);
}

/* ---- with_lock -------------------------------------------------------------- */

typedef struct with_lock_call {
    vk_lock_manager *manager;
    VALUE manager_obj;
    const char *key;
    size_t keylen;
    vk_lock_options opts;
    int has_opts;
    vk_lock *lock;   /* the held lock while the block runs */
    VALUE handle;    /* the borrowed LockHandle given to the block */
    VALUE result;    /* the block's value */
    VALUE error;     /* the StandardError the block raised, else Qnil */
    int block_state; /* non-zero when the block threw or raised another exception */
} with_lock_call;

/* VALUEs in with_lock_call live on this thread's stack, in the frame of
 * manager_with_lock, which Ruby's GC scans while the GVL is released. */

static VALUE yield_handle(VALUE handle)
{
    return rb_yield(handle);
}

static VALUE keep_block_error(VALUE arg, VALUE error)
{
    ((with_lock_call *)arg)->error = error;
    return Qnil;
}

/* A StandardError is kept to be wrapped; anything else (Interrupt, a
 * throw, Timeout's exit) is caught by rb_protect and passes unchanged. */
static VALUE yield_rescuing(VALUE arg)
{
    with_lock_call *call = (with_lock_call *)arg;
    return rb_rescue2(yield_handle, call->handle, keep_block_error, arg, rb_eStandardError,
                      (VALUE)0);
}

static void *run_block_with_gvl(void *arg)
{
    with_lock_call *call = arg;
    call->handle = wrap_lock(call->lock, 1, call->manager_obj);
    call->result = rb_protect(yield_rescuing, (VALUE)call, &call->block_state);
    /* The core frees the lock after the release: the handle must not be
     * used past the block. */
    handle_box *box = rb_check_typeddata(call->handle, &handle_type);
    box->lock = NULL;
    return NULL;
}

static vk_status block_trampoline(void *userdata, vk_lock *lock)
{
    with_lock_call *call = userdata;
    call->lock = lock;
    vkrb_call_with_gvl(run_block_with_gvl, call);
    /* Any non-OK status makes the core release and report a function
     * failure; the Ruby exception itself is raised again afterwards. */
    return call->block_state || !NIL_P(call->error) ? VK_ERR_LOCK_FN : VK_OK;
}

static vk_status run_with_lock(void *data, vk_context *ctx)
{
    with_lock_call *call = data;
    return vk_lock_manager_with_lock_options(call->manager, ctx, call->key, call->keylen,
                                             call->has_opts ? &call->opts : NULL,
                                             block_trampoline, call);
}

/* LockManager#_with_lock(key, options) { |handle| ... }: the block's value.
 * Released on return and on exception. After the release, a StandardError
 * of the block is raised as LockFunctionError with the block's error as
 * its cause (LockManager#_raise_function_error); other exceptions and
 * throws pass unchanged. */
static VALUE manager_with_lock(VALUE self, VALUE key, VALUE options)
{
    rb_need_block();
    with_lock_call call = {manager_of(self), self, NULL, 0, {0}, 0, NULL, Qnil, Qnil, Qnil, 0};
    call.has_opts = options_from_ruby(options, &call.opts);
    key_copy k;
    key_copy_fill(&k, key);
    call.key = k.bytes;
    call.keylen = k.len;
    vk_status st = vkrb_blocking(run_with_lock, &call);
    key_copy_release(&k);
    if (call.block_state)
        rb_jump_tag(call.block_state);
    if (!NIL_P(call.error))
        rb_funcall(self, rb_intern("_raise_function_error"), 1, call.error);
    vkrb_sinks_reraise_pending();
    if (st != VK_OK)
        vkrb_raise(st);
    return call.result;
}

void vkrb_init_lock(void)
{
    vkrb_cLockHandle = rb_define_class_under(vkrb_mVKClient, "LockHandle", rb_cObject);
    rb_define_alloc_func(vkrb_cLockHandle, handle_alloc);
    rb_undef_method(CLASS_OF(vkrb_cLockHandle), "new");
    rb_define_method(vkrb_cLockHandle, "unlock", handle_unlock, 0);
    rb_define_method(vkrb_cLockHandle, "fencing_token", handle_fencing_token, 0);
    rb_define_method(vkrb_cLockHandle, "key", handle_key, 0);
    rb_define_method(vkrb_cLockHandle, "lost?", handle_is_lost, 0);
    rb_define_private_method(vkrb_cLockHandle, "_extend_ms", handle_extend_ms, 1);
    rb_define_private_method(vkrb_cLockHandle, "_validity_ms", handle_validity_ms, 0);

    vkrb_cLockManager = rb_define_class_under(vkrb_mVKClient, "LockManager", rb_cObject);
    rb_define_alloc_func(vkrb_cLockManager, manager_alloc);
    rb_define_method(vkrb_cLockManager, "try_lock", manager_try_lock, 1);
    rb_define_private_method(vkrb_cLockManager, "_native_init", manager_native_init, 1);
    rb_define_private_method(vkrb_cLockManager, "_acquire", manager_acquire, 2);
    rb_define_private_method(vkrb_cLockManager, "_with_lock", manager_with_lock, 2);

    VALUE native = rb_define_module_under(vkrb_mVKClient, "Native");
    rb_define_module_function(native, "lock_options_default", native_lock_options_default, 0);
    rb_define_module_function(native, "lock_options_rate_limiter",
                              native_lock_options_rate_limiter, 0);
    rb_define_module_function(native, "lock_options_validate", native_lock_options_validate, 1);
}
