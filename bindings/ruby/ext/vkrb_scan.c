/*
 * VKClient::Scan, native half: one vk_scan, page by page, for
 * Client#scan_each and its hscan/sscan/zscan siblings (lib/vkclient/client.rb
 * turns the pages into blocks and Enumerators). A page runs without the
 * GVL, cancelled by Thread#raise, Timeout.timeout or Ctrl-C; the cursor
 * stays where it was when a page fails.
 */
#include "vkrb.h"

typedef struct scan_box {
    vk_scan *scan;
    VALUE client; /* the VKClient::Client, kept alive while the scan is */
} scan_box;

static void scan_mark(void *ptr)
{
    rb_gc_mark(((scan_box *)ptr)->client);
}

static void scan_free(void *ptr)
{
    scan_box *box = ptr;
    vk_scan_free(box->scan);
    xfree(box);
}

static size_t scan_size(const void *ptr)
{
    (void)ptr;
    return sizeof(scan_box);
}

static const rb_data_type_t scan_type = {
    .wrap_struct_name = "VKClient::Scan",
    .function = {.dmark = scan_mark, .dfree = scan_free, .dsize = scan_size},
    .flags = RUBY_TYPED_FREE_IMMEDIATELY,
};

static VALUE scan_alloc(VALUE klass)
{
    scan_box *box;
    VALUE obj = TypedData_Make_Struct(klass, scan_box, &scan_type, box);
    box->scan = NULL;
    box->client = Qnil;
    return obj;
}

/* Optional String/Symbol argument: NULL for nil. */
static const char *optional_bytes(VALUE *value, size_t *len)
{
    *len = 0;
    if (NIL_P(*value))
        return NULL;
    if (SYMBOL_P(*value))
        *value = rb_sym2str(*value);
    StringValue(*value);
    *len = (size_t)RSTRING_LEN(*value);
    return RSTRING_PTR(*value);
}

/* Scan.new(client, command, key, match, count, type): command "SCAN" (key
 * nil) or "HSCAN"/"SSCAN"/"ZSCAN"; nil for each option not given. */
static VALUE scan_initialize(VALUE self, VALUE client, VALUE command, VALUE key, VALUE match,
                             VALUE count, VALUE type)
{
    scan_box *box = rb_check_typeddata(self, &scan_type);
    if (box->scan)
        rb_raise(rb_eRuntimeError, "the scan is already open");
    vk_client *handle = vkrb_client_handle(client);
    const char *cmd = StringValueCStr(command);
    size_t keylen, matchlen, typelen;
    const char *keyp = optional_bytes(&key, &keylen);
    const char *matchp = optional_bytes(&match, &matchlen);
    const char *typep = optional_bytes(&type, &typelen);
    if (typep != NULL)
        typep = StringValueCStr(type);
    int64_t n = 0;
    if (!NIL_P(count)) {
        if (!RB_INTEGER_TYPE_P(count))
            rb_raise(rb_eTypeError, "count must be an Integer or nil");
        n = NUM2LL(count);
        if (n == 0)
            rb_raise(rb_eArgError, "count must be a positive Integer or nil");
    }
    vk_status st;
    if (keyp == NULL && strcmp(cmd, "SCAN") == 0)
        st = vk_scan_new(&box->scan, handle, matchp, matchlen, n, typep);
    else
        st = vk_scan_new_key(&box->scan, handle, cmd, keyp, keylen, matchp, matchlen, n);
    RB_GC_GUARD(key);
    RB_GC_GUARD(match);
    RB_GC_GUARD(type);
    if (st != VK_OK)
        vkrb_raise(st);
    box->client = client;
    return self;
}

typedef struct page_call {
    vk_scan *scan;
    vk_reply *page;
} page_call;

static vk_status run_page(void *data, vk_context *ctx)
{
    page_call *call = data;
    return vk_scan_next(&call->page, call->scan, ctx);
}

static VALUE convert_page(VALUE page)
{
    return vkrb_reply_to_ruby((const vk_reply *)page);
}

static VALUE free_page(VALUE page)
{
    vk_reply_free((vk_reply *)page);
    return Qnil;
}

/* Scan#next_page: the next page as an Array ([] once done?). */
static VALUE scan_next_page(VALUE self)
{
    scan_box *box = rb_check_typeddata(self, &scan_type);
    page_call call = {box->scan, NULL};
    vk_status st = vkrb_blocking(run_page, &call);
    vkrb_sinks_reraise_pending();
    if (st != VK_OK)
        vkrb_raise(st);
    return rb_ensure(convert_page, (VALUE)call.page, free_page, (VALUE)call.page);
}

static VALUE scan_is_done(VALUE self)
{
    scan_box *box = rb_check_typeddata(self, &scan_type);
    return vk_scan_done(box->scan) ? Qtrue : Qfalse;
}

void vkrb_init_scan(void)
{
    VALUE cScan = rb_define_class_under(vkrb_mVKClient, "Scan", rb_cObject);
    rb_define_alloc_func(cScan, scan_alloc);
    rb_define_method(cScan, "initialize", scan_initialize, 6);
    rb_define_method(cScan, "next_page", scan_next_page, 0);
    rb_define_method(cScan, "done?", scan_is_done, 0);
    /* Internal: Client#scan_each and friends are the API. */
    rb_funcall(vkrb_mVKClient, rb_intern("private_constant"), 1, ID2SYM(rb_intern("Scan")));
}
