/*
 * auth.c — token files and constant-time token checks (see auth.h). Hashing first makes the compare
 * independent of the presented token's length; CRYPTO_memcmp makes it independent of its content.
 */
#include "auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "log.h"

char *mt_auth_read_token_file(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "token file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        MT_LOGW("token file %s is readable by group or others (chmod 600 it)", path);
    char line[4096];
    char *tok = NULL;
    if (fgets(line, sizeof line, f)) {
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        size_t n = strlen(s);
        while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
        if (n) tok = strdup(s);
    }
    fclose(f);
    OPENSSL_cleanse(line, sizeof line);
    if (!tok) snprintf(err, errlen, "token file %s: the first line is empty", path);
    return tok;
}

static int load_one(const char *path, unsigned char digest[32], bool *has, char *err, size_t errlen) {
    if (!path || !*path) return 0;
    char *tok = mt_auth_read_token_file(path, err, errlen);
    if (!tok) return -1;
    SHA256((const unsigned char *)tok, strlen(tok), digest);
    OPENSSL_cleanse(tok, strlen(tok));
    free(tok);
    *has = true;
    return 0;
}

int mt_auth_load(mt_auth *a, const char *token_file, const char *admin_token_file, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    if (load_one(token_file, a->user, &a->has_user, err, errlen) != 0) return -1;
    if (load_one(admin_token_file, a->admin, &a->has_admin, err, errlen) != 0) return -1;
    if (a->has_user && a->has_admin && CRYPTO_memcmp(a->user, a->admin, 32) == 0)
        MT_LOGW("the translate token and the admin token are the same: every client is an admin");
    return 0;
}

Mt__V1__Role mt_auth_check(const mt_auth *a, const char *token) {
    if (!mt_auth_enabled(a)) return MT__V1__ROLE__ROLE_ADMIN;
    unsigned char d[32];
    SHA256((const unsigned char *)(token ? token : ""), token ? strlen(token) : 0, d);
    /* Both compares always run. */
    int admin_eq = CRYPTO_memcmp(d, a->admin, 32) == 0;
    int user_eq = CRYPTO_memcmp(d, a->user, 32) == 0;
    int empty = !token || !*token;
    OPENSSL_cleanse(d, sizeof d);
    if (empty) return MT__V1__ROLE__ROLE_NONE;
    if (a->has_admin && admin_eq) return MT__V1__ROLE__ROLE_ADMIN;
    if (a->has_user && user_eq) return MT__V1__ROLE__ROLE_USER;
    return MT__V1__ROLE__ROLE_NONE;
}
