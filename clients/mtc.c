/*
 * mtc.c — the shared client connection (see mtc.h).
 */
#include "mtc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct mtc_conn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    uint8_t *rbuf;
    size_t rlen, rcap;
    uint64_t max_frame;
    char err[256];
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining(int64_t deadline) {
    if (deadline < 0) return -1;
    int64_t r = deadline - now_ms();
    return r < 0 ? 0 : (int)r;
}

/* Waits for fd to be ready; MTC_OK or MTC_TIMEOUT / MTC_ERR. */
static int wait_fd(mtc_conn *c, short events, int64_t deadline) {
    for (;;) {
        struct pollfd p = {c->fd, events, 0};
        int r = poll(&p, 1, remaining(deadline));
        if (r > 0) return MTC_OK;
        if (r == 0) {
            snprintf(c->err, sizeof c->err, "timed out");
            return MTC_TIMEOUT;
        }
        if (errno != EINTR) {
            snprintf(c->err, sizeof c->err, "poll: %s", strerror(errno));
            return MTC_ERR;
        }
    }
}

static void ssl_errtext(mtc_conn *c, const char *what) {
    unsigned long e = ERR_get_error();
    char buf[200] = "";
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    else if (errno) snprintf(buf, sizeof buf, "%s", strerror(errno));
    else snprintf(buf, sizeof buf, "connection closed");
    snprintf(c->err, sizeof c->err, "%s: %s", what, buf);
    ERR_clear_error();
}

int mtc_connect(const char *hostport, const mtc_tls *tls, int timeout_ms, mtc_conn **out, char *err,
                size_t errlen) {
    char host[256], port[16];
    const char *colon;
    if (hostport[0] == '[') {
        const char *end = strchr(hostport, ']');
        if (!end || end[1] != ':' || (size_t)(end - hostport - 1) >= sizeof host) goto bad;
        memcpy(host, hostport + 1, (size_t)(end - hostport - 1));
        host[end - hostport - 1] = 0;
        colon = end + 1;
    } else {
        colon = strrchr(hostport, ':');
        if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof host) goto bad;
        memcpy(host, hostport, (size_t)(colon - hostport));
        host[colon - hostport] = 0;
    }
    if (!colon[1] || strlen(colon + 1) >= sizeof port) goto bad;
    strcpy(port, colon + 1);

    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    struct addrinfo hints, *res = NULL, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", hostport, gai_strerror(rc));
        return MTC_ERR;
    }
    mtc_conn *c = calloc(1, sizeof *c);
    if (!c) {
        freeaddrinfo(res);
        snprintf(err, errlen, "out of memory");
        return MTC_ERR;
    }
    c->fd = -1;
    c->max_frame = 64u << 20;
    int last = MTC_ERR;
    for (ai = res; ai; ai = ai->ai_next) {
        c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (c->fd < 0) continue;
        if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
            last = wait_fd(c, POLLOUT, deadline);
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (last == MTC_OK && getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) break;
            if (last == MTC_OK) {
                snprintf(c->err, sizeof c->err, "%s", strerror(soerr));
                last = MTC_ERR;
            }
        } else {
            snprintf(c->err, sizeof c->err, "%s", strerror(errno));
        }
        close(c->fd);
        c->fd = -1;
    }
    freeaddrinfo(res);
    if (c->fd < 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", hostport, c->err[0] ? c->err : "no address");
        free(c);
        return last == MTC_TIMEOUT ? MTC_TIMEOUT : MTC_ERR;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    if (tls && tls->enabled) {
        c->ctx = SSL_CTX_new(TLS_client_method());
        if (!c->ctx) goto tls_fail;
        SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
        if (tls->ca_file ? SSL_CTX_load_verify_locations(c->ctx, tls->ca_file, NULL) != 1
                         : SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
            ssl_errtext(c, tls->ca_file ? "cannot load the CA file" : "cannot load the system CAs");
            goto tls_fail;
        }
        c->ssl = SSL_new(c->ctx);
        if (!c->ssl) goto tls_fail;
        SSL_set_fd(c->ssl, c->fd);
        const char *name = tls->server_name ? tls->server_name : host;
        unsigned char ipbuf[16];
        bool is_ip = inet_pton(AF_INET, name, ipbuf) == 1 || inet_pton(AF_INET6, name, ipbuf) == 1;
        if (is_ip) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name);
        } else {
            SSL_set_tlsext_host_name(c->ssl, name);
            SSL_set1_host(c->ssl, name);
        }
        for (;;) {
            ERR_clear_error();
            int r = SSL_connect(c->ssl);
            if (r == 1) break;
            int e = SSL_get_error(c->ssl, r);
            int w = e == SSL_ERROR_WANT_READ    ? wait_fd(c, POLLIN, deadline)
                    : e == SSL_ERROR_WANT_WRITE ? wait_fd(c, POLLOUT, deadline)
                                                : MTC_ERR;
            if (w == MTC_TIMEOUT) {
                snprintf(err, errlen, "TLS handshake with %s: timed out", hostport);
                mtc_close(c);
                return MTC_TIMEOUT;
            }
            if (w != MTC_OK) {
                long v = SSL_get_verify_result(c->ssl);
                if (v != X509_V_OK) snprintf(c->err, sizeof c->err, "certificate: %s", X509_verify_cert_error_string(v));
                else ssl_errtext(c, "handshake");
                ERR_clear_error();
                goto tls_fail;
            }
        }
    }
    *out = c;
    return MTC_OK;
tls_fail:
    ERR_clear_error();
    snprintf(err, errlen, "TLS with %s: %s", hostport, c->err[0] ? c->err : "failed");
    mtc_close(c);
    return MTC_ERR;
bad:
    snprintf(err, errlen, "'%s' is not HOST:PORT", hostport);
    return MTC_ERR;
}

void mtc_close(mtc_conn *c) {
    if (!c) return;
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (c->ctx) SSL_CTX_free(c->ctx);
    if (c->fd >= 0) close(c->fd);
    free(c->rbuf);
    free(c);
}

int mtc_fd(const mtc_conn *c) { return c->fd; }
const char *mtc_error(const mtc_conn *c) { return c->err; }
void mtc_set_max_frame(mtc_conn *c, uint64_t max) { c->max_frame = max; }

void mtc_shutdown_write(mtc_conn *c) {
    if (c->ssl) SSL_shutdown(c->ssl);
    else shutdown(c->fd, SHUT_WR);
}

int mtc_send_raw(mtc_conn *c, const void *data, size_t n, int timeout_ms) {
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t w;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
            if (r > 0) {
                w = r;
            } else {
                int e = SSL_get_error(c->ssl, r);
                int rc = e == SSL_ERROR_WANT_READ    ? wait_fd(c, POLLIN, deadline)
                         : e == SSL_ERROR_WANT_WRITE ? wait_fd(c, POLLOUT, deadline)
                                                     : (ssl_errtext(c, "write"), MTC_ERR);
                if (rc != MTC_OK) return rc;
                continue;
            }
        } else {
            w = send(c->fd, p, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    int rc = wait_fd(c, POLLOUT, deadline);
                    if (rc != MTC_OK) return rc;
                    continue;
                }
                snprintf(c->err, sizeof c->err, "send: %s", strerror(errno));
                return MTC_ERR;
            }
        }
        p += w;
        n -= (size_t)w;
    }
    return MTC_OK;
}

int mtc_send(mtc_conn *c, const mt_frame *f, int timeout_ms) {
    size_t n;
    uint8_t *buf = mt_frame_encode(f, &n);
    if (!buf) {
        snprintf(c->err, sizeof c->err, "cannot encode the frame");
        return MTC_ERR;
    }
    int rc = mtc_send_raw(c, buf, n, timeout_ms);
    free(buf);
    return rc;
}

/* Reads more bytes into rbuf. */
static int fill(mtc_conn *c, int64_t deadline) {
    if (c->rcap - c->rlen < 16384) {
        size_t cap = c->rcap ? c->rcap * 2 : 65536;
        uint8_t *nb = realloc(c->rbuf, cap);
        if (!nb) {
            snprintf(c->err, sizeof c->err, "out of memory");
            return MTC_ERR;
        }
        c->rbuf = nb;
        c->rcap = cap;
    }
    for (;;) {
        size_t room = c->rcap - c->rlen;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, c->rbuf + c->rlen, room > INT32_MAX ? INT32_MAX : (int)room);
            if (r > 0) {
                c->rlen += (size_t)r;
                return MTC_OK;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
                snprintf(c->err, sizeof c->err, "connection closed by the server");
                return MTC_EOF;
            }
            int rc = e == SSL_ERROR_WANT_READ    ? wait_fd(c, POLLIN, deadline)
                     : e == SSL_ERROR_WANT_WRITE ? wait_fd(c, POLLOUT, deadline)
                                                 : (ssl_errtext(c, "read"), MTC_ERR);
            if (rc != MTC_OK) return rc;
        } else {
            ssize_t r = recv(c->fd, c->rbuf + c->rlen, room, 0);
            if (r > 0) {
                c->rlen += (size_t)r;
                return MTC_OK;
            }
            if (r == 0) {
                snprintf(c->err, sizeof c->err, "connection closed by the server");
                return MTC_EOF;
            }
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int rc = wait_fd(c, POLLIN, deadline);
                if (rc != MTC_OK) return rc;
                continue;
            }
            snprintf(c->err, sizeof c->err, "recv: %s", strerror(errno));
            return errno == ECONNRESET ? MTC_EOF : MTC_ERR;
        }
    }
}

int mtc_recv(mtc_conn *c, int timeout_ms, mt_frame **out) {
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    for (;;) {
        if (c->rlen >= MT_FRAME_HEADER_BYTES) {
            uint64_t n = mt_frame_get_len(c->rbuf);
            if (n > c->max_frame) {
                snprintf(c->err, sizeof c->err, "the server sent a frame of %llu bytes", (unsigned long long)n);
                return MTC_ERR;
            }
            if (c->rlen >= MT_FRAME_HEADER_BYTES + n) {
                const char *why = NULL;
                int code = mt_frame_decode(c->rbuf + MT_FRAME_HEADER_BYTES, (size_t)n, out, &why);
                memmove(c->rbuf, c->rbuf + MT_FRAME_HEADER_BYTES + n, c->rlen - MT_FRAME_HEADER_BYTES - n);
                c->rlen -= MT_FRAME_HEADER_BYTES + n;
                if (code) {
                    snprintf(c->err, sizeof c->err, "undecodable frame from the server: %s", why);
                    return MTC_ERR;
                }
                return MTC_OK;
            }
            if (c->rcap < MT_FRAME_HEADER_BYTES + n) {
                uint8_t *nb = realloc(c->rbuf, MT_FRAME_HEADER_BYTES + n + 16384);
                if (!nb) {
                    snprintf(c->err, sizeof c->err, "out of memory");
                    return MTC_ERR;
                }
                c->rbuf = nb;
                c->rcap = MT_FRAME_HEADER_BYTES + n + 16384;
            }
        }
        int rc = fill(c, deadline);
        if (rc != MTC_OK) return rc;
    }
}

int mtc_hello(mtc_conn *c, const char *token, const char *client_name, int timeout_ms, mt_frame **ok_out,
              char *err, size_t errlen) {
    Mt__V1__Hello h = MT__V1__HELLO__INIT;
    h.protocol_version = MT_PROTOCOL_VERSION;
    h.token = (char *)(token ? token : "");
    h.client = (char *)(client_name ? client_name : "mtc");
    mt_frame f = MT__V1__FRAME__INIT;
    f.id = 1;
    f.body_case = MT__V1__FRAME__BODY_HELLO;
    f.hello = &h;
    int rc = mtc_send(c, &f, timeout_ms);
    if (rc != MTC_OK) {
        snprintf(err, errlen, "sending Hello: %s", c->err);
        return -1;
    }
    mt_frame *r = NULL;
    rc = mtc_recv(c, timeout_ms, &r);
    if (rc != MTC_OK) {
        snprintf(err, errlen, "waiting for HelloOk: %s", c->err);
        return -1;
    }
    if (r->body_case == MT__V1__FRAME__BODY_HELLO_OK) {
        if (ok_out) *ok_out = r;
        else mt_frame_free(r);
        return 0;
    }
    int code = -1;
    if (r->body_case == MT__V1__FRAME__BODY_ERROR) {
        code = (int)r->error->code;
        snprintf(err, errlen, "%s: %s", mt_error_code_name(code), r->error->message);
    } else {
        snprintf(err, errlen, "unexpected answer to Hello (body %d)", (int)r->body_case);
    }
    mt_frame_free(r);
    return code;
}
