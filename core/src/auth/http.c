/*
 * One HTTP(S) request through libcurl for the Google endpoints. Bounded by
 * a deadline and a context: the transfer runs on a multi handle polled in
 * short slices, and a progress callback aborts it as soon as the context is
 * cancelled. Certificates are verified (libcurl's defaults, never turned
 * off). Response bodies may carry tokens, so their buffers are wiped.
 */
#include "auth/gcp_iam.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define VK_HTTP_MAX_BODY (1024 * 1024)
#define VK_HTTP_POLL_SLICE_MS 50
#define VK_HTTP_MAX_TIMEOUT_MS (24LL * 3600 * 1000)

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

static void curl_init(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- the body sink --------------------------------------------------------------- */

typedef struct body_sink {
    char *data;
    size_t len, cap;
    bool too_large;
} body_sink;

/* Grows by copying so that no unwiped copy of a token is left behind by
 * realloc. */
static size_t write_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    body_sink *sink = userdata;
    size_t n = size * nmemb;
    if (sink->len + n > VK_HTTP_MAX_BODY) {
        sink->too_large = true;
        return 0;
    }
    if (sink->len + n + 1 > sink->cap) {
        size_t cap = sink->cap ? sink->cap : 1024;
        while (cap < sink->len + n + 1)
            cap *= 2;
        char *grown = malloc(cap);
        if (grown == NULL)
            return 0;
        if (sink->data != NULL) {
            memcpy(grown, sink->data, sink->len);
            vk__wipe(sink->data, sink->cap);
            free(sink->data);
        }
        sink->data = grown;
        sink->cap = cap;
    }
    memcpy(sink->data + sink->len, ptr, n);
    sink->len += n;
    sink->data[sink->len] = '\0';
    return n;
}

static void sink_free(body_sink *sink)
{
    if (sink->data != NULL) {
        vk__wipe(sink->data, sink->cap);
        free(sink->data);
    }
    memset(sink, 0, sizeof *sink);
}

/* ---- the transfer ------------------------------------------------------------------- */

typedef struct transfer {
    vk_context *ctx;
    int64_t deadline_ms;
    vk_status ctx_status;    /* the context's failure once seen (detail set) */
} transfer;

/* Called by libcurl during the transfer: non-zero aborts it. */
static int check_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow,
                          curl_off_t ultotal, curl_off_t ulnow)
{
    const transfer *t = userdata;
    if (t->ctx != NULL && vk_context_is_cancelled(t->ctx))
        return 1;
    int64_t now_us = vk__now_us();
    return now_us >= vk__ctx_deadline_us(t->ctx) || now_us / 1000 >= t->deadline_ms;
}

/* The failure of an aborted or timed-out transfer: the context's own when
 * it is the reason, else the operation timeout. */
static vk_status interrupted(const char *what, transfer *t)
{
    vk_status st = t->ctx_status != VK_OK ? t->ctx_status : vk__ctx_check(t->ctx);
    if (st != VK_OK)
        return st;
    return vk__fail(VK_ERR_IAM, "%s did not answer within the operation timeout", what);
}

/* Headers may hold a bearer token: wipe them before libcurl frees them. */
static void free_headers(struct curl_slist *list)
{
    for (struct curl_slist *h = list; h != NULL; h = h->next)
        vk__wipe(h->data, strlen(h->data));
    curl_slist_free_all(list);
}

/* The request's header list (NULL when there are none); false when out of
 * memory. */
static bool build_headers(struct curl_slist **out, const char *const *headers, bool has_body)
{
    struct curl_slist *list = NULL;
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        struct curl_slist *next = curl_slist_append(list, headers[i]);
        if (next == NULL)
            goto fail;
        list = next;
    }
    /* libcurl's default Expect: 100-continue costs a round trip on POST. */
    if (has_body) {
        struct curl_slist *next = curl_slist_append(list, "Expect:");
        if (next == NULL)
            goto fail;
        list = next;
    }
    *out = list;
    return true;
fail:
    free_headers(list);
    *out = NULL;
    return false;
}

static bool configure(CURL *easy, const char *url, struct curl_slist *headers, const char *body,
                      body_sink *sink, transfer *t, char *errbuf, int64_t remaining_ms)
{
    bool ok = curl_easy_setopt(easy, CURLOPT_URL, url) == CURLE_OK &&
              curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
              curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
              curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
              curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)remaining_ms) == CURLE_OK &&
              curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers) == CURLE_OK &&
              curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_body) == CURLE_OK &&
              curl_easy_setopt(easy, CURLOPT_WRITEDATA, sink) == CURLE_OK &&
              curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L) == CURLE_OK &&
              curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, check_progress) == CURLE_OK &&
              curl_easy_setopt(easy, CURLOPT_XFERINFODATA, t) == CURLE_OK &&
              curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf) == CURLE_OK;
    if (ok && body != NULL)
        ok = curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body) == CURLE_OK &&
             curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)strlen(body)) == CURLE_OK;
    /* OpenSSL's own variables, which Go and most TLS tools honour too: a
     * private CA (an intercepting proxy, a test double) needs no code. */
    const char *ca_file = getenv("SSL_CERT_FILE");
    const char *ca_dir = getenv("SSL_CERT_DIR");
    if (ok && ca_file != NULL && ca_file[0] != '\0')
        ok = curl_easy_setopt(easy, CURLOPT_CAINFO, ca_file) == CURLE_OK;
    if (ok && ca_dir != NULL && ca_dir[0] != '\0')
        ok = curl_easy_setopt(easy, CURLOPT_CAPATH, ca_dir) == CURLE_OK;
    /* Plain http:// is only ever a loopback endpoint: a proxy from the
     * environment (http_proxy) would carry the JWT or token in the clear. */
    if (ok && strncmp(url, "http://", 7) == 0)
        ok = curl_easy_setopt(easy, CURLOPT_PROXY, "") == CURLE_OK;
    return ok;
}

/* Drives the transfer in short slices so that a cancelled context or a
 * passed deadline stops it even while libcurl waits on the network. */
static CURLcode run(CURLM *multi, CURL *easy, transfer *t)
{
    int running = 1;
    while (running) {
        if (curl_multi_perform(multi, &running) != CURLM_OK)
            return CURLE_FAILED_INIT;
        if (!running)
            break;
        /* The full check, with the interrupt hook (a binding's Ctrl-C),
         * once per slice on the caller's thread. */
        if ((t->ctx_status = vk__ctx_check(t->ctx)) != VK_OK || check_progress(t, 0, 0, 0, 0))
            return CURLE_ABORTED_BY_CALLBACK;
        if (curl_multi_poll(multi, NULL, 0, VK_HTTP_POLL_SLICE_MS, NULL) != CURLM_OK)
            return CURLE_FAILED_INIT;
    }
    int left;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(multi, &left)) != NULL)
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy)
            return msg->data.result;
    return CURLE_FAILED_INIT;
}

vk_status vk__http_request(const char *what, const char *url, const char *const *headers,
                           const char *body, vk_context *ctx, int64_t deadline_ms,
                           vk_http_response *resp)
{
    memset(resp, 0, sizeof *resp);
    pthread_once(&curl_once, curl_init);
    if (curl_init_result != CURLE_OK)
        return vk__fail(VK_ERR_IAM, "initialising libcurl failed");
    transfer t = {.ctx = ctx, .deadline_ms = deadline_ms, .ctx_status = VK_OK};
    int64_t timeout_ms = deadline_ms - vk__now_ms();
    if (timeout_ms <= 0)
        return interrupted(what, &t);
    if (timeout_ms > VK_HTTP_MAX_TIMEOUT_MS)
        timeout_ms = VK_HTTP_MAX_TIMEOUT_MS;
    vk_status st = vk__ctx_check(ctx);
    if (st != VK_OK)
        return st;

    body_sink sink = {0};
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *header_list = NULL;
    bool headers_ok = build_headers(&header_list, headers, body != NULL);
    CURL *easy = curl_easy_init();
    CURLM *multi = curl_multi_init();
    if (easy == NULL || multi == NULL || !headers_ok ||
        !configure(easy, url, header_list, body, &sink, &t, errbuf, timeout_ms) ||
        curl_multi_add_handle(multi, easy) != CURLM_OK) {
        st = vk__fail(VK_ERR_IAM, "preparing the %s request failed", what);
    } else {
        CURLcode rc = run(multi, easy, &t);
        curl_multi_remove_handle(multi, easy);
        if (rc == CURLE_ABORTED_BY_CALLBACK || rc == CURLE_OPERATION_TIMEDOUT)
            st = interrupted(what, &t);
        else if (sink.too_large)
            st = vk__fail(VK_ERR_IAM, "%s response is larger than %d bytes", what,
                          VK_HTTP_MAX_BODY);
        else if (rc != CURLE_OK)
            st = vk__fail(VK_ERR_IAM, "%s request failed: %s", what,
                          errbuf[0] ? errbuf : curl_easy_strerror(rc));
        else
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &resp->status);
    }
    curl_multi_cleanup(multi);
    curl_easy_cleanup(easy);
    free_headers(header_list);
    if (st != VK_OK) {
        sink_free(&sink);
        return st;
    }
    if (sink.data == NULL && (sink.data = calloc(1, 1)) == NULL)
        return vk__fail_nomem();
    resp->body = sink.data;            /* ownership moves; wiped by the caller */
    resp->len = sink.len;
    return VK_OK;
}

void vk__http_response_free(vk_http_response *resp)
{
    if (resp->body != NULL) {
        vk__wipe(resp->body, resp->len);
        free(resp->body);
    }
    memset(resp, 0, sizeof *resp);
}
