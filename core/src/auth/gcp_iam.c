/*
 * The Google side of IAM auth (SEMANTICS §3 steps 1-3): an OAuth2 access
 * token for the service-account key (or from the environment: a key file
 * named by GOOGLE_APPLICATION_CREDENTIALS, else the metadata server), then
 * generateAccessToken for the configured service account. The result is
 * the Redis password. No error text carries credential material: response
 * bodies are only ever mined for Google's error message.
 */
#include "auth/gcp_iam.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VK_GCP_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define VK_JWT_GRANT "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define VK_METADATA_DEFAULT_HOST "metadata.google.internal"
#define VK_METADATA_TOKEN_PATH "/computeMetadata/v1/instance/service-accounts/default/token"
#define VK_KEY_FILE_MAX (64 * 1024)
#define VK_ERROR_TEXT_MAX 300

/* ---- small utilities --------------------------------------------------------- */

static char *format_alloc(const char *fmt, ...) VK_PRINTF(1, 2);
static char *format_alloc(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *out = malloc((size_t)n + 1);
    if (out == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(out, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return out;
}

/* Google's explanation of a failure, from either error shape:
 * {"error":{"message":...}} (Google APIs) or {"error":...,
 * "error_description":...} (OAuth). Control characters are replaced and
 * the text is cut, so a hostile body cannot forge log lines. */
static void error_message(const vk_http_response *resp, char *buf, size_t cap)
{
    buf[0] = '\0';
    cJSON *root = cJSON_ParseWithLength(resp->body, resp->len);
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "error_description");
    if (cJSON_IsObject(error))
        text = cJSON_GetObjectItemCaseSensitive(error, "message");
    else if (!cJSON_IsString(text) && cJSON_IsString(error))
        text = error;
    if (cJSON_IsString(text)) {
        size_t i = 0;
        for (const char *p = text->valuestring; *p != '\0' && i + 1 < cap; p++)
            buf[i++] = (unsigned char)*p < 0x20 ? ' ' : *p;
        buf[i] = '\0';
    }
    cJSON_Delete(root);
}

static vk_status http_status_failure(const char *what, const vk_http_response *resp)
{
    char message[VK_ERROR_TEXT_MAX];
    error_message(resp, message, sizeof message);
    if (message[0] == '\0')
        return vk__fail(VK_ERR_IAM, "%s returned HTTP %ld", what, resp->status);
    return vk__fail(VK_ERR_IAM, "%s returned HTTP %ld: %s", what, resp->status, message);
}

/* Sends one request and insists on a 2xx answer whose body is a JSON
 * object; *root is then the parsed body (wipe_and_delete it). */
static vk_status call_json(const char *what, const char *url, const char *const *headers,
                           const char *body, vk_context *ctx, int64_t deadline_ms, cJSON **root)
{
    vk_http_response resp;
    vk_status st = vk__http_request(what, url, headers, body, ctx, deadline_ms, &resp);
    if (st != VK_OK)
        return st;
    if (resp.status < 200 || resp.status > 299) {
        st = http_status_failure(what, &resp);
    } else {
        *root = cJSON_ParseWithLength(resp.body, resp.len);
        if (!cJSON_IsObject(*root)) {
            cJSON_Delete(*root);
            *root = NULL;
            st = vk__fail(VK_ERR_IAM, "%s returned a response that is not a JSON object", what);
        }
    }
    vk__http_response_free(&resp);
    return st;
}

static void wipe_and_delete(cJSON *root)
{
    for (cJSON *item = root != NULL ? root->child : NULL; item != NULL; item = item->next)
        if (item->valuestring != NULL)
            vk__wipe(item->valuestring, strlen(item->valuestring));
    cJSON_Delete(root);
}

/* A copy of the non-empty string member name, or NULL. */
static char *take_string(const cJSON *root, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!cJSON_IsString(item) || item->valuestring[0] == '\0')
        return NULL;
    return strdup(item->valuestring);
}

/* ---- step 1: the key --------------------------------------------------------------- */

static vk_status read_key_file(const char *path, char **json, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return vk__fail(VK_ERR_IAM,
                        "reading credentials failed: cannot open the file named by "
                        "GOOGLE_APPLICATION_CREDENTIALS");
    char *buf = malloc(VK_KEY_FILE_MAX + 1);
    size_t n = buf != NULL ? fread(buf, 1, VK_KEY_FILE_MAX + 1, f) : 0;
    bool read_error = ferror(f) != 0;
    fclose(f);
    if (buf == NULL)
        return vk__fail_nomem();
    if (read_error || n > VK_KEY_FILE_MAX) {
        vk__wipe(buf, n);
        free(buf);
        return vk__fail(VK_ERR_IAM,
                        read_error ? "reading credentials failed: cannot read the file named by "
                                     "GOOGLE_APPLICATION_CREDENTIALS"
                                   : "reading credentials failed: the file named by "
                                     "GOOGLE_APPLICATION_CREDENTIALS is too large");
    }
    buf[n] = '\0';
    *json = buf;
    *len = n;
    return VK_OK;
}

/* Loads the key from base64 or from the key file; the decoded JSON is
 * wiped as soon as it is parsed. */
static vk_status load_key(vk_gcp_key *key, const char *credentials_base64, const char *key_file)
{
    char *json = NULL;
    size_t len = 0;
    if (credentials_base64 != NULL) {
        unsigned char *decoded;
        if (vk__base64_decode(credentials_base64, &decoded, &len) != 0)
            return vk__fail(VK_ERR_IAM, "parsing credentials failed: invalid base64");
        json = (char *)decoded;
    } else {
        vk_status st = read_key_file(key_file, &json, &len);
        if (st != VK_OK)
            return st;
    }
    vk_status st = vk__gcp_key_parse(key, json, len);
    vk__wipe(json, len);
    free(json);
    return st;
}

/* ---- step 2: the OAuth2 access token --------------------------------------------------- */

static vk_status oauth_token_from_key(const vk_gcp_key *key, vk_context *ctx,
                                      int64_t deadline_ms, char **oauth_token)
{
    if (!vk__http_url_allowed(key->token_uri))
        return vk__fail(VK_ERR_IAM,
                        "credentials token_uri must use https:// (plain http:// only for "
                        "loopback hosts)");
    char *jwt = NULL;
    vk_status st = vk__gcp_jwt_sign(key, vk__wall_ms() / 1000, &jwt);
    if (st != VK_OK)
        return st;
    char *form = format_alloc("grant_type=%s&assertion=%s",
                              "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer", jwt);
    vk__free_secret(jwt);
    if (form == NULL)
        return vk__fail_nomem();
    static const char *const headers[] = {
        "Content-Type: application/x-www-form-urlencoded", "Accept: application/json", NULL};
    cJSON *root = NULL;
    st = call_json("token endpoint", key->token_uri, headers, form, ctx, deadline_ms, &root);
    vk__free_secret(form);
    if (st != VK_OK)
        return st;
    *oauth_token = take_string(root, "access_token");
    wipe_and_delete(root);
    if (*oauth_token == NULL)
        return vk__fail(VK_ERR_IAM, "token endpoint response has no access_token");
    return VK_OK;
}

static vk_status oauth_token_from_metadata(vk_context *ctx, int64_t deadline_ms,
                                           char **oauth_token)
{
    const char *host = getenv("GCE_METADATA_HOST");
    if (host == NULL || host[0] == '\0')
        host = VK_METADATA_DEFAULT_HOST;
    /* The metadata server is plain http by design; it is link-local. */
    char *url = format_alloc("http://%s%s", host, VK_METADATA_TOKEN_PATH);
    if (url == NULL)
        return vk__fail_nomem();
    static const char *const headers[] = {"Metadata-Flavor: Google", NULL};
    cJSON *root = NULL;
    vk_status st = call_json("metadata server", url, headers, NULL, ctx, deadline_ms, &root);
    free(url);
    if (st != VK_OK)
        return st;
    *oauth_token = take_string(root, "access_token");
    wipe_and_delete(root);
    if (*oauth_token == NULL)
        return vk__fail(VK_ERR_IAM, "metadata server response has no access_token");
    return VK_OK;
}

/* The caller's identity: the configured key, else the key file of
 * GOOGLE_APPLICATION_CREDENTIALS, else the metadata server. */
static vk_status oauth_token(const vk_gcp_request *req, vk_context *ctx, int64_t deadline_ms,
                             char **token)
{
    const char *key_file = getenv("GOOGLE_APPLICATION_CREDENTIALS");
    if (req->credentials_base64 == NULL && (key_file == NULL || key_file[0] == '\0'))
        return oauth_token_from_metadata(ctx, deadline_ms, token);
    vk_gcp_key key;
    vk_status st = load_key(&key, req->credentials_base64, key_file);
    if (st != VK_OK)
        return st;
    st = oauth_token_from_key(&key, ctx, deadline_ms, token);
    vk__gcp_key_free(&key);
    return st;
}

/* ---- step 3: generateAccessToken -------------------------------------------------------- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    /* Howard Hinnant's algorithm: days since 1970-01-01, proleptic Gregorian. */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* RFC 3339 ("2026-01-02T03:04:05.123456789Z" or with a +hh:mm offset) to
 * Unix ms; -1 when it does not parse. */
static int64_t parse_rfc3339_ms(const char *s)
{
    int year, month, day, hour, minute, second, used = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &year, &month, &day, &hour, &minute, &second,
               &used) != 6 || used != 19)
        return -1;
    if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 ||
        second > 60)
        return -1;
    const char *p = s + used;
    int64_t ms = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    int64_t offset_s = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, n = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || n != 5)
            return -1;
        offset_s = (*p == '+' ? 1 : -1) * (int64_t)(oh * 3600 + om * 60);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    int64_t days = days_from_civil(year, (unsigned)month, (unsigned)day);
    int64_t secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_s;
    return secs * 1000 + ms;
}

static vk_status generate_access_token(const vk_gcp_request *req, const char *oauth_token,
                                       vk_context *ctx, int64_t deadline_ms, char **token,
                                       int64_t *expires_at_ms)
{
    if (!vk__http_url_allowed(req->iam_endpoint))
        return vk__fail(VK_ERR_IAM,
                        "IAM endpoint must use https:// (plain http:// only for loopback hosts)");
    char *account = curl_easy_escape(NULL, req->service_account, 0);
    size_t base_len = strlen(req->iam_endpoint);
    while (base_len > 0 && req->iam_endpoint[base_len - 1] == '/')
        base_len--;
    char *url = account != NULL
                    ? format_alloc("%.*s/v1/projects/-/serviceAccounts/%s:generateAccessToken",
                                   (int)base_len, req->iam_endpoint, account)
                    : NULL;
    curl_free(account);
    int64_t lifetime_s = req->token_lifetime_ms / 1000 > 0 ? req->token_lifetime_ms / 1000 : 1;
    char *body = format_alloc("{\"scope\":[\"%s\"],\"lifetime\":\"%llds\"}", VK_GCP_SCOPE,
                              (long long)lifetime_s);
    char *authorization = format_alloc("Authorization: Bearer %s", oauth_token);
    vk_status st = VK_OK;
    cJSON *root = NULL;
    if (url == NULL || body == NULL || authorization == NULL) {
        st = vk__fail_nomem();
    } else {
        const char *const headers[] = {authorization, "Content-Type: application/json",
                                       "Accept: application/json", NULL};
        st = call_json("IAM Credentials API", url, headers, body, ctx, deadline_ms, &root);
    }
    free(url);
    free(body);
    vk__free_secret(authorization);
    if (st != VK_OK)
        return st;

    char *access_token = take_string(root, "accessToken");
    const cJSON *expire = cJSON_GetObjectItemCaseSensitive(root, "expireTime");
    int64_t expires = cJSON_IsString(expire) ? parse_rfc3339_ms(expire->valuestring) : -1;
    wipe_and_delete(root);
    if (access_token == NULL)
        return vk__fail(VK_ERR_IAM, "IAM Credentials API response has no accessToken");
    if (expires < 0) {
        vk__free_secret(access_token);
        return vk__fail(VK_ERR_IAM, "IAM Credentials API response has no valid expireTime");
    }
    *token = access_token;
    *expires_at_ms = expires;
    return VK_OK;
}

/* ---- the whole flow ------------------------------------------------------------------------ */

vk_status vk__gcp_fetch_token(const vk_gcp_request *req, vk_context *ctx, int64_t timeout_ms,
                              char **token, int64_t *expires_at_ms)
{
    *token = NULL;
    *expires_at_ms = 0;
    int64_t deadline_ms = timeout_ms > 0 ? vk__now_ms() + timeout_ms : INT64_MAX / 2;
    char *oauth = NULL;
    vk_status st = oauth_token(req, ctx, deadline_ms, &oauth);
    if (st != VK_OK)
        return st;
    st = generate_access_token(req, oauth, ctx, deadline_ms, token, expires_at_ms);
    vk__free_secret(oauth);
    return st;
}
