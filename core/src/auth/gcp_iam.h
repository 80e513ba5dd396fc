/*
 * GCP IAM token retrieval: service-account key (or the environment) ->
 * OAuth2 access token -> IAM Credentials generateAccessToken. Used by the
 * refresher (refresh.c); split into the key/JWT part (jwt.c), the HTTP
 * part (http.c) and the Google flow (gcp_iam.c).
 */
#ifndef VK_GCP_IAM_H
#define VK_GCP_IAM_H

#include "config/config.h"

#include <openssl/evp.h>

/* What one token request needs; every string is borrowed. */
typedef struct vk_gcp_request {
    /* base64 of the key JSON; NULL: GOOGLE_APPLICATION_CREDENTIALS, then
     * the metadata server. */
    const char *credentials_base64;
    const char *service_account;
    const char *iam_endpoint;         /* base URL of the IAM Credentials API */
    int64_t token_lifetime_ms;
} vk_gcp_request;

/* Fetches a fresh access token within timeout_ms (and ctx, which may be
 * NULL). On success *token is a malloc'd secret (free with
 * vk__free_secret) and *expires_at_ms its Unix expiry in ms. On failure
 * VK_ERR_IAM (or VK_ERR_TIMEOUT / VK_ERR_CANCELLED) with a detail that
 * never contains credential material. */
vk_status vk__gcp_fetch_token(const vk_gcp_request *req, vk_context *ctx, int64_t timeout_ms,
                              char **token, int64_t *expires_at_ms);

/* ---- jwt.c: the service-account key and the signed assertion ------------- */

/* A parsed service-account key. Free with vk__gcp_key_free (wipes). */
typedef struct vk_gcp_key {
    char *client_email;
    char *token_uri;
    EVP_PKEY *private_key;
} vk_gcp_key;

/* Parses the key JSON (len bytes). VK_ERR_IAM with a detail that names a
 * missing field but never shows content. */
vk_status vk__gcp_key_parse(vk_gcp_key *key, const char *json, size_t len);
void vk__gcp_key_free(vk_gcp_key *key);

/* Builds the RS256 JWT bearer assertion (iss = client_email, scope
 * cloud-platform, aud = token_uri, iat = now, exp = now + 1 h) as a
 * malloc'd secret string. */
vk_status vk__gcp_jwt_sign(const vk_gcp_key *key, int64_t now_unix_s, char **jwt);

/* ---- http.c: one HTTP request through libcurl ---------------------------- */

typedef struct vk_http_response {
    long status;
    char *body;          /* NUL-terminated; may hold a secret (wiped by _free) */
    size_t len;
} vk_http_response;

/* Sends a request: POST when body != NULL, else GET. headers is a
 * NULL-terminated list (may contain a bearer token: not logged). Honours
 * deadline_ms (monotonic) and ctx. Only http:// and https:// are spoken,
 * redirects are not followed; callers check vk__http_url_allowed first
 * (the metadata server is plain http by design). Transport failures give VK_ERR_IAM / VK_ERR_TIMEOUT /
 * VK_ERR_CANCELLED naming what (never the body). what names the call in
 * messages, e.g. "token endpoint". */
vk_status vk__http_request(const char *what, const char *url, const char *const *headers,
                           const char *body, vk_context *ctx, int64_t deadline_ms,
                           vk_http_response *resp);
void vk__http_response_free(vk_http_response *resp);
/* True when url is https://, or http:// to 127.0.0.0/8, ::1 or localhost. */
bool vk__http_url_allowed(const char *url);

#endif /* VK_GCP_IAM_H */
