/*
 * sha256.c — SHA-256 through OpenSSL's EVP interface (checkpoints carry the digest of their payload;
 * shipped checkpoints are verified with it).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/io.h"

struct mt_sha256_ctx {
    EVP_MD_CTX *md;
};

mt_status mt_sha256_init(mt_sha256_ctx **out) {
    if (!out) return mt_error(MT_ERR_INVALID_ARG, "mt_sha256_init: NULL out");
    mt_sha256_ctx *c = mt_sys_calloc(1, sizeof *c);
    if (!c) return mt_error(MT_ERR_NOMEM, "sha256: out of memory");
    c->md = EVP_MD_CTX_new();
    if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
        mt_sha256_free(c);
        return mt_error(MT_ERR_INTERNAL, "sha256: EVP_DigestInit_ex failed");
    }
    *out = c;
    return MT_OK;
}

mt_status mt_sha256_update(mt_sha256_ctx *c, const void *data, size_t len) {
    if (!c || (!data && len)) return mt_error(MT_ERR_INVALID_ARG, "mt_sha256_update: NULL argument");
    if (len && EVP_DigestUpdate(c->md, data, len) != 1) return mt_error(MT_ERR_INTERNAL, "sha256: EVP_DigestUpdate failed");
    return MT_OK;
}

mt_status mt_sha256_final(mt_sha256_ctx *c, uint8_t digest[MT_SHA256_LEN]) {
    if (!c || !digest) {
        mt_sha256_free(c);
        return mt_error(MT_ERR_INVALID_ARG, "mt_sha256_final: NULL argument");
    }
    unsigned n = 0;
    int ok = EVP_DigestFinal_ex(c->md, digest, &n) == 1 && n == MT_SHA256_LEN;
    mt_sha256_free(c);
    return ok ? MT_OK : mt_error(MT_ERR_INTERNAL, "sha256: EVP_DigestFinal_ex failed");
}

void mt_sha256_free(mt_sha256_ctx *c) {
    if (!c) return;
    EVP_MD_CTX_free(c->md);
    mt_sys_free(c);
}

mt_status mt_sha256(const void *data, size_t len, uint8_t digest[MT_SHA256_LEN]) {
    mt_sha256_ctx *c = NULL;
    MT_TRY(mt_sha256_init(&c));
    mt_status st = mt_sha256_update(c, data, len);
    if (st != MT_OK) {
        mt_sha256_free(c);
        return st;
    }
    return mt_sha256_final(c, digest);
}

mt_status mt_sha256_file(const char *path, uint8_t digest[MT_SHA256_LEN]) {
    if (!path || !digest) return mt_error(MT_ERR_INVALID_ARG, "mt_sha256_file: NULL argument");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return mt_error(e == ENOENT ? MT_ERR_NOT_FOUND : MT_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    mt_sha256_ctx *c = NULL;
    mt_status st = mt_sha256_init(&c);
    if (st != MT_OK) {
        close(fd);
        return st;
    }
    unsigned char buf[1 << 16];
    for (;;) {
        ssize_t k = read(fd, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            st = mt_error(MT_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        if (k == 0) break;
        if ((st = mt_sha256_update(c, buf, (size_t)k)) != MT_OK) break;
    }
    close(fd);
    if (st != MT_OK) {
        mt_sha256_free(c);
        return st;
    }
    return mt_sha256_final(c, digest);
}

char *mt_sha256_hex(const uint8_t digest[MT_SHA256_LEN], char hex[MT_SHA256_HEX_LEN]) {
    static const char d[] = "0123456789abcdef";
    for (int i = 0; i < MT_SHA256_LEN; i++) {
        hex[2 * i] = d[digest[i] >> 4];
        hex[2 * i + 1] = d[digest[i] & 15];
    }
    hex[64] = '\0';
    return hex;
}
