/*
 * tls.c — the server's OpenSSL context for --tls-cert/--tls-key: TLS 1.2 or later, the certificate
 * chain and key checked against each other at startup so a mismatch fails before listening.
 */
#include "server.h"

#include <stdio.h>

#include <openssl/err.h>

static void ssl_err(char *err, size_t errlen, const char *what, const char *file) {
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "TLS: %s %s: %s", what, file ? file : "", buf);
    ERR_clear_error();
}

SSL_CTX *mt_tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_err(err, errlen, "cannot make a context", NULL);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        ssl_err(err, errlen, "cannot load the certificate", cert);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        ssl_err(err, errlen, "cannot load the key", key);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_err(err, errlen, "the key does not match the certificate", key);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}
