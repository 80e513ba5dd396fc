/*
 * The service-account key and the RS256 JWT bearer assertion made from it
 * (RFC 7523). Every buffer that held key material or the assertion is
 * wiped before it is freed, and no error text ever quotes the key.
 */
#include "auth/gcp_iam.h"

#include <cjson/cJSON.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VK_GCP_SCOPE "https://www.googleapis.com/auth/cloud-platform"
#define VK_JWT_LIFETIME_S 3600

/* ---- base64url -------------------------------------------------------------- */

/* Unpadded base64url (RFC 7515 §2) of len bytes into a malloc'd string. */
static char *base64url_encode(const unsigned char *in, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(len / 3 * 4 + 5);
    if (out == NULL)
        return NULL;
    size_t n = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[n++] = alphabet[v >> 18 & 63];
        out[n++] = alphabet[v >> 12 & 63];
        out[n++] = alphabet[v >> 6 & 63];
        out[n++] = alphabet[v & 63];
    }
    if (i + 1 == len) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[n++] = alphabet[v >> 18 & 63];
        out[n++] = alphabet[v >> 12 & 63];
    } else if (i + 2 == len) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[n++] = alphabet[v >> 18 & 63];
        out[n++] = alphabet[v >> 12 & 63];
        out[n++] = alphabet[v >> 6 & 63];
    }
    out[n] = '\0';
    return out;
}

/* ---- the key ------------------------------------------------------------------- */

/* cJSON frees without wiping: clear every string of the tree first, so the
 * PEM body does not linger in freed memory. */
static void wipe_json(cJSON *item)
{
    for (; item != NULL; item = item->next) {
        if (item->valuestring != NULL)
            vk__wipe(item->valuestring, strlen(item->valuestring));
        wipe_json(item->child);
    }
}

static vk_status required_string(const cJSON *root, const char *name, const char **out)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!cJSON_IsString(item) || item->valuestring[0] == '\0')
        return vk__fail(VK_ERR_IAM, "parsing credentials failed: missing %s", name);
    *out = item->valuestring;
    return VK_OK;
}

static vk_status parse_private_key(EVP_PKEY **out, const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (bio == NULL)
        return vk__fail_nomem();
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    /* OpenSSL's queue could describe the PEM; it is never reported. */
    ERR_clear_error();
    if (pkey == NULL)
        return vk__fail(VK_ERR_IAM,
                        "parsing credentials failed: private_key is not a valid PEM private key");
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
        EVP_PKEY_free(pkey);
        return vk__fail(VK_ERR_IAM, "parsing credentials failed: private_key is not an RSA key");
    }
    *out = pkey;
    return VK_OK;
}

vk_status vk__gcp_key_parse(vk_gcp_key *key, const char *json, size_t len)
{
    memset(key, 0, sizeof *key);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (root == NULL || !cJSON_IsObject(root)) {
        wipe_json(root);
        cJSON_Delete(root);
        return vk__fail(VK_ERR_IAM, "parsing credentials JSON failed (content redacted)");
    }
    const char *email = NULL, *pem = NULL, *token_uri = NULL;
    vk_status st = required_string(root, "client_email", &email);
    if (st == VK_OK)
        st = required_string(root, "private_key", &pem);
    if (st == VK_OK)
        st = required_string(root, "token_uri", &token_uri);
    if (st == VK_OK)
        st = parse_private_key(&key->private_key, pem);
    if (st == VK_OK) {
        key->client_email = strdup(email);
        key->token_uri = strdup(token_uri);
        if (key->client_email == NULL || key->token_uri == NULL)
            st = vk__fail_nomem();
    }
    wipe_json(root);
    cJSON_Delete(root);
    if (st != VK_OK)
        vk__gcp_key_free(key);
    return st;
}

void vk__gcp_key_free(vk_gcp_key *key)
{
    free(key->client_email);
    free(key->token_uri);
    EVP_PKEY_free(key->private_key);   /* OpenSSL clears RSA key material */
    memset(key, 0, sizeof *key);
}

/* ---- the assertion ----------------------------------------------------------------- */

static char *claims_json(const vk_gcp_key *key, int64_t now_unix_s)
{
    cJSON *claims = cJSON_CreateObject();
    if (claims == NULL)
        return NULL;
    bool ok = cJSON_AddStringToObject(claims, "iss", key->client_email) != NULL &&
              cJSON_AddStringToObject(claims, "scope", VK_GCP_SCOPE) != NULL &&
              cJSON_AddStringToObject(claims, "aud", key->token_uri) != NULL &&
              cJSON_AddNumberToObject(claims, "iat", (double)now_unix_s) != NULL &&
              cJSON_AddNumberToObject(claims, "exp", (double)(now_unix_s + VK_JWT_LIFETIME_S)) != NULL;
    char *text = ok ? cJSON_PrintUnformatted(claims) : NULL;
    cJSON_Delete(claims);
    return text;
}

/* RS256 over the signing input; the signature base64url-encoded. */
static char *sign_rs256(EVP_PKEY *pkey, const char *input)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *sig = NULL;
    size_t siglen = 0;
    char *encoded = NULL;
    if (md == NULL)
        return NULL;
    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
        EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)input, strlen(input)) == 1 &&
        (sig = malloc(siglen)) != NULL &&
        EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, strlen(input)) == 1)
        encoded = base64url_encode(sig, siglen);
    ERR_clear_error();
    free(sig);
    EVP_MD_CTX_free(md);
    return encoded;
}

vk_status vk__gcp_jwt_sign(const vk_gcp_key *key, int64_t now_unix_s, char **jwt)
{
    static const char header[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
    *jwt = NULL;
    char *claims = claims_json(key, now_unix_s);
    char *header64 = base64url_encode((const unsigned char *)header, sizeof header - 1);
    char *claims64 = claims != NULL ? base64url_encode((const unsigned char *)claims,
                                                       strlen(claims)) : NULL;
    free(claims);
    if (header64 == NULL || claims64 == NULL) {
        free(header64);
        free(claims64);
        return vk__fail_nomem();
    }
    size_t input_len = strlen(header64) + 1 + strlen(claims64);
    char *input = malloc(input_len + 1);
    if (input != NULL)
        snprintf(input, input_len + 1, "%s.%s", header64, claims64);
    free(header64);
    free(claims64);
    if (input == NULL)
        return vk__fail_nomem();

    char *signature = sign_rs256(key->private_key, input);
    if (signature == NULL) {
        free(input);
        return vk__fail(VK_ERR_IAM, "signing the token request with the credentials failed");
    }
    size_t total = input_len + 1 + strlen(signature);
    char *out = malloc(total + 1);
    if (out != NULL)
        snprintf(out, total + 1, "%s.%s", input, signature);
    free(input);
    vk__free_secret(signature);
    if (out == NULL)
        return vk__fail_nomem();
    *jwt = out;
    return VK_OK;
}
