/*
 * auth.c — token files and constant-time token checks (see auth.h). Hashing first makes the compare
 * independent of the presented token's length; CRYPTO_memcmp makes it independent of its content.
 */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "log.h"
#include "token_file.h"

/* The length of the smallest Hello frame carrying a token of n bytes. */
static size_t hello_bytes(size_t n) {
    char *tok = malloc(n + 1);
    if (!tok) return SIZE_MAX;
    memset(tok, 'x', n);
    tok[n] = 0;
    Mt__V1__Hello h = MT__V1__HELLO__INIT;
    h.protocol_version = 1;
    h.token = tok;
    Mt__V1__Frame f = MT__V1__FRAME__INIT;
    f.id = 1;
    f.body_case = MT__V1__FRAME__BODY_HELLO;
    f.hello = &h;
    size_t len = mt__v1__frame__get_packed_size(&f);
    free(tok);
    return len;
}

static int load_one(const char *path, uint64_t max_hello, unsigned char digest[32], bool *has, char *err,
                    size_t errlen) {
    if (!path || !*path) return 0;
    bool loose = false;
    char *tok = mt_token_file_read(path, &loose, err, errlen);
    if (!tok) return -1;
    size_t need = hello_bytes(strlen(tok));
    if (need > max_hello) {
        snprintf(err, errlen,
                 "token file %s: the token is %zu bytes; a Hello carrying it is %zu bytes, over --max-hello-bytes %llu "
                 "(no client could authenticate): use a shorter token or raise the limit",
                 path, strlen(tok), need, (unsigned long long)max_hello);
        OPENSSL_cleanse(tok, strlen(tok));
        free(tok);
        return -1;
    }
    if (loose) MT_LOGW("token file %s is readable by group or others (chmod 600 it)", path);
    SHA256((const unsigned char *)tok, strlen(tok), digest);
    OPENSSL_cleanse(tok, strlen(tok));
    free(tok);
    *has = true;
    return 0;
}

int mt_auth_load(mt_auth *a, const char *token_file, const char *admin_token_file, uint64_t max_hello_bytes,
                 char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    if (load_one(token_file, max_hello_bytes, a->user, &a->has_user, err, errlen) != 0) return -1;
    if (load_one(admin_token_file, max_hello_bytes, a->admin, &a->has_admin, err, errlen) != 0) return -1;
    if (a->has_user && a->has_admin && CRYPTO_memcmp(a->user, a->admin, 32) == 0)
        MT_LOGW("the translate token and the admin token are the same: every client is an admin");
    return 0;
}

int mt_auth_load_cluster(mt_auth *a, const char *cluster_token_file, uint64_t max_hello_bytes, char *err,
                         size_t errlen) {
    if (load_one(cluster_token_file, max_hello_bytes, a->cluster, &a->has_cluster, err, errlen) != 0) return -1;
    if (a->has_cluster && ((a->has_user && CRYPTO_memcmp(a->cluster, a->user, 32) == 0) ||
                           (a->has_admin && CRYPTO_memcmp(a->cluster, a->admin, 32) == 0))) {
        snprintf(err, errlen, "token file %s: the cluster token must differ from the translate and admin tokens",
                 cluster_token_file);
        return -1;
    }
    return 0;
}

Mt__V1__Role mt_auth_check(const mt_auth *a, const char *token) {
    unsigned char d[32];
    SHA256((const unsigned char *)(token ? token : ""), token ? strlen(token) : 0, d);
    /* Every compare always runs. */
    int admin_eq = CRYPTO_memcmp(d, a->admin, 32) == 0;
    int user_eq = CRYPTO_memcmp(d, a->user, 32) == 0;
    int cluster_eq = CRYPTO_memcmp(d, a->cluster, 32) == 0;
    int empty = !token || !*token;
    OPENSSL_cleanse(d, sizeof d);
    if (!empty && a->has_cluster && cluster_eq) return MT__V1__ROLE__ROLE_CLUSTER;
    if (!mt_auth_enabled(a)) return MT__V1__ROLE__ROLE_ADMIN;
    if (empty) return MT__V1__ROLE__ROLE_NONE;
    if (a->has_admin && admin_eq) return MT__V1__ROLE__ROLE_ADMIN;
    if (a->has_user && user_eq) return MT__V1__ROLE__ROLE_USER;
    return MT__V1__ROLE__ROLE_NONE;
}
