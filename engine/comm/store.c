/*
 * store.c — the rendezvous key-value store (see store.h): a poll() server thread on rank 0 and a
 * blocking client with deadlines on every rank, plus the heartbeat that lets a failed collective
 * name the rank it lost.
 */
#include "comm/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"

enum { OP_HELLO = 1, OP_SET = 2, OP_GET = 3, OP_BEAT = 4, OP_STATUS = 5, OP_BYE = 6, OP_OK = 10, OP_VAL = 11,
       OP_ERR = 12 };
enum { RANK_UNKNOWN = 0, RANK_UP = 1, RANK_LOST = 2, RANK_BYE = 3 };

#define HEARTBEAT_S 0.5
#define HDR 13 /* u32 len, u8 op, u32 rank, u32 keylen */

static void put32(uint8_t *p, uint32_t v) {
    v = htonl(v);
    memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return ntohl(v);
}

/* One frame into a malloc'd buffer. */
static uint8_t *frame(int op, int rank, const char *key, const void *val, size_t vlen, size_t *n) {
    size_t kl = key ? strlen(key) : 0;
    *n = HDR + kl + vlen;
    uint8_t *b = malloc(*n);
    if (!b) return NULL;
    put32(b, (uint32_t)(*n - 4));
    b[4] = (uint8_t)op;
    put32(b + 5, (uint32_t)rank);
    put32(b + 9, (uint32_t)kl);
    if (kl) memcpy(b + HDR, key, kl);
    if (vlen) memcpy(b + HDR + kl, val, vlen);
    return b;
}

/* Writes all of buf before the deadline. 0 ok, -1 error or timeout (errno ETIMEDOUT). */
static int write_all(int fd, const uint8_t *buf, size_t n, double deadline) {
    while (n) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            buf += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
        double left = deadline - mt_now_s();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        poll(&p, 1, (int)(left * 1000) + 1);
    }
    return 0;
}

/* Reads exactly n bytes before the deadline. 0 ok, -1 error/timeout, 1 clean EOF. */
static int read_all(int fd, uint8_t *buf, size_t n, double deadline) {
    while (n) {
        double left = deadline - mt_now_s();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r < 0 && errno != EINTR) return -1;
        if (r <= 0) continue;
        ssize_t got = recv(fd, buf, n, MSG_DONTWAIT);
        if (got == 0) return 1;
        if (got < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return -1;
        }
        buf += got;
        n -= (size_t)got;
    }
    return 0;
}

mt_status mt_store_parse_addr(const char *spec, char *host, size_t cap, int *port) {
    if (!spec || !spec[0]) return mt_error(MT_ERR_INVALID_ARG, "rendezvous: empty address (want HOST:PORT)");
    const char *colon = strrchr(spec, ':');
    if (!colon) return mt_error(MT_ERR_INVALID_ARG, "rendezvous '%s': no port (want HOST:PORT)", spec);
    const char *h = spec;
    size_t hl = (size_t)(colon - spec);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= cap) return mt_error(MT_ERR_INVALID_ARG, "rendezvous '%s': bad host", spec);
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 1 || p > 65535) return mt_error(MT_ERR_INVALID_ARG, "rendezvous '%s': port must be 1..65535", spec);
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (int)p;
    return MT_OK;
}

int mt_store_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static mt_status resolve(const char *host, int port, int passive, struct addrinfo **res) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0};
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, res);
    if (rc != 0) return mt_error(MT_ERR_NETWORK, "rendezvous %s:%d: %s", host, port, gai_strerror(rc));
    return MT_OK;
}

mt_status mt_store_local_addr(const char *host, int port, char *addr, size_t cap) {
    struct addrinfo *res;
    MT_TRY(resolve(host, port, 0, &res));
    int fd = socket(res->ai_family, SOCK_DGRAM, 0);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int ok = fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0 && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0;
    freeaddrinfo(res);
    if (fd >= 0) close(fd);
    if (!ok) return mt_error(MT_ERR_NETWORK, "rendezvous %s:%d: no route (%s)", host, port, strerror(errno));
    if (getnameinfo((struct sockaddr *)&ss, sl, addr, (socklen_t)cap, NULL, 0, NI_NUMERICHOST) != 0)
        return mt_error(MT_ERR_NETWORK, "rendezvous %s:%d: cannot name the local address", host, port);
    return MT_OK;
}

/* ---- the server ---------------------------------------------------------------------------------- */

typedef struct conn {
    int fd;
    int rank;          /* -1 until HELLO */
    int beat;          /* the heartbeat connection of its rank */
    uint8_t *buf;      /* partial frame */
    size_t len, cap;
    char *wait_key;    /* a GET waiting for its key */
} conn;

struct mt_store_server {
    int lfd, wake[2], world;
    pthread_t th;
    int running;
    int n_conns, cap_conns;
    conn *conns;
    int n_kv, cap_kv;
    char **keys;
    uint8_t **vals;
    size_t *lens;
    int *state;         /* (world) RANK_* */
    double *last_beat;  /* (world) */
    char refusal[512];  /* the first refused HELLO: answered to every GET from then on */
    atomic_int healthy; /* ranks > 0 connected with a fresh heartbeat (refreshed by the thread) */
};

/* Ranks > 0 whose main connection is open and whose heartbeat is fresh. Server thread only. */
static int count_healthy(const mt_store_server *s) {
    double t = mt_now_s();
    int n = 0;
    for (int i = 0; i < s->n_conns; i++) {
        const conn *c = &s->conns[i];
        if (c->rank > 0 && !c->beat && s->state[c->rank] == RANK_UP && t - s->last_beat[c->rank] < 4 * HEARTBEAT_S + 1.0)
            n++;
    }
    return n;
}

static void conn_send(conn *c, int op, const char *key, const void *val, size_t len) {
    size_t n;
    uint8_t *b = frame(op, 0, key, val, len, &n);
    if (!b) return;
    /* A bounded write: a client that does not read is dropped at its next poll. */
    write_all(c->fd, b, n, mt_now_s() + 5.0);
    free(b);
}

static int kv_find(const mt_store_server *s, const char *key) {
    for (int i = 0; i < s->n_kv; i++)
        if (strcmp(s->keys[i], key) == 0) return i;
    return -1;
}

static void serve_waiters(mt_store_server *s) {
    for (int i = 0; i < s->n_conns; i++) {
        conn *c = &s->conns[i];
        if (!c->wait_key) continue;
        if (s->refusal[0]) {
            conn_send(c, OP_ERR, NULL, s->refusal, strlen(s->refusal));
        } else {
            int k = kv_find(s, c->wait_key);
            if (k < 0) continue;
            conn_send(c, OP_VAL, NULL, s->vals[k], s->lens[k]);
        }
        free(c->wait_key);
        c->wait_key = NULL;
    }
}

static void refuse(mt_store_server *s, conn *c, const char *msg) {
    if (!s->refusal[0]) snprintf(s->refusal, sizeof s->refusal, "%s", msg);
    conn_send(c, OP_ERR, NULL, msg, strlen(msg));
    serve_waiters(s);
}

/* Handles one complete frame of c; returns 0, or -1 to drop the connection. */
static int handle(mt_store_server *s, conn *c, const uint8_t *f, size_t n) {
    int op = f[4];
    uint32_t rank = get32(f + 5), kl = get32(f + 9);
    if (kl > MT_STORE_KEY_MAX || HDR + kl > n) return -1;
    char key[MT_STORE_KEY_MAX + 1];
    memcpy(key, f + HDR, kl);
    key[kl] = 0;
    const uint8_t *val = f + HDR + kl;
    size_t vl = n - HDR - kl;
    if (op == OP_HELLO) {
        char msg[400];
        if (vl < 5) return -1;
        uint32_t world = get32(val);
        if ((int)world != s->world) {
            snprintf(msg, sizeof msg, "rank %u asked for a world of %u ranks, but rank 0 runs a world of %d", rank,
                     world, s->world);
            refuse(s, c, msg);
            return 0;
        }
        if (rank >= (uint32_t)s->world) {
            snprintf(msg, sizeof msg, "rank %u is out of range for a world of %d ranks", rank, s->world);
            refuse(s, c, msg);
            return 0;
        }
        c->beat = val[4];
        if (!c->beat) {
            for (int i = 0; i < s->n_conns; i++)
                if (&s->conns[i] != c && s->conns[i].rank == (int)rank && !s->conns[i].beat) {
                    snprintf(msg, sizeof msg, "two processes claim rank %u", rank);
                    refuse(s, c, msg);
                    return 0;
                }
            s->state[rank] = RANK_UP;
        }
        c->rank = (int)rank;
        s->last_beat[rank] = mt_now_s();
        conn_send(c, OP_OK, NULL, NULL, 0);
        return 0;
    }
    if (c->rank < 0) return -1; /* HELLO first */
    if (op == OP_SET) {
        if (vl > MT_STORE_VALUE_MAX) return -1;
        int k = kv_find(s, key);
        uint8_t *copy = malloc(vl ? vl : 1);
        if (!copy) return -1;
        memcpy(copy, val, vl);
        if (k < 0) {
            if (s->n_kv == s->cap_kv) {
                int nc = s->cap_kv ? 2 * s->cap_kv : 64;
                char **nk = realloc(s->keys, sizeof *nk * (size_t)nc);
                if (nk) s->keys = nk;
                uint8_t **nv = realloc(s->vals, sizeof *nv * (size_t)nc);
                if (nv) s->vals = nv;
                size_t *nl = realloc(s->lens, sizeof *nl * (size_t)nc);
                if (nl) s->lens = nl;
                if (!nk || !nv || !nl) {
                    free(copy);
                    return -1;
                }
                s->cap_kv = nc;
            }
            k = s->n_kv++;
            s->keys[k] = strdup(key);
        } else {
            free(s->vals[k]);
        }
        s->vals[k] = copy;
        s->lens[k] = vl;
        conn_send(c, OP_OK, NULL, NULL, 0);
        serve_waiters(s);
        return 0;
    }
    if (op == OP_GET) {
        free(c->wait_key);
        c->wait_key = strdup(key);
        serve_waiters(s);
        return 0;
    }
    if (op == OP_BEAT) {
        s->last_beat[c->rank] = mt_now_s();
        return 0;
    }
    if (op == OP_BYE) {
        s->state[c->rank] = RANK_BYE;
        return 0;
    }
    if (op == OP_STATUS) {
        uint8_t *st = malloc((size_t)s->world * 5);
        if (!st) return -1;
        double t = mt_now_s();
        for (int r = 0; r < s->world; r++) {
            st[5 * r] = (uint8_t)s->state[r];
            double age = s->state[r] == RANK_UNKNOWN ? 0 : t - s->last_beat[r];
            put32(st + 5 * r + 1, (uint32_t)(age * 1000));
        }
        conn_send(c, OP_VAL, NULL, st, (size_t)s->world * 5);
        free(st);
        return 0;
    }
    return -1;
}

static void drop_conn(mt_store_server *s, int i) {
    conn *c = &s->conns[i];
    if (c->rank >= 0 && !c->beat && s->state[c->rank] == RANK_UP) s->state[c->rank] = RANK_LOST;
    close(c->fd);
    free(c->buf);
    free(c->wait_key);
    s->conns[i] = s->conns[--s->n_conns];
}

static void *server_main(void *arg) {
    mt_store_server *s = arg;
    struct pollfd *pf = NULL;
    int cap = 0;
    while (s->running) {
        if (cap < s->n_conns + 2) {
            cap = s->n_conns + 16;
            struct pollfd *np = realloc(pf, sizeof *pf * (size_t)cap);
            if (!np) break;
            pf = np;
        }
        pf[0] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
        pf[1] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        for (int i = 0; i < s->n_conns; i++) pf[i + 2] = (struct pollfd){.fd = s->conns[i].fd, .events = POLLIN};
        int nfd = s->n_conns + 2;
        atomic_store(&s->healthy, count_healthy(s));
        if (poll(pf, (nfds_t)nfd, 200) < 0 && errno != EINTR) break;
        if (pf[1].revents) break;
        for (int i = nfd - 3; i >= 0; i--) {
            if (!pf[i + 2].revents) continue;
            conn *c = &s->conns[i];
            uint8_t tmp[65536];
            ssize_t got = recv(c->fd, tmp, sizeof tmp, MSG_DONTWAIT);
            if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
                drop_conn(s, i);
                continue;
            }
            if (got < 0) continue;
            if (c->len + (size_t)got > c->cap) {
                size_t nc = (c->len + (size_t)got) * 2;
                uint8_t *nb = realloc(c->buf, nc);
                if (!nb) {
                    drop_conn(s, i);
                    continue;
                }
                c->buf = nb;
                c->cap = nc;
            }
            memcpy(c->buf + c->len, tmp, (size_t)got);
            c->len += (size_t)got;
            int bad = 0;
            size_t off = 0;
            while (!bad && c->len - off >= 4) {
                uint32_t fl = get32(c->buf + off);
                if (fl < HDR - 4 || fl > MT_STORE_VALUE_MAX + MT_STORE_KEY_MAX + HDR) {
                    bad = 1;
                    break;
                }
                if (c->len - off < 4 + (size_t)fl) break;
                if (handle(s, c, c->buf + off, 4 + (size_t)fl) != 0) bad = 1;
                off += 4 + fl;
            }
            if (bad) {
                drop_conn(s, i);
                continue;
            }
            memmove(c->buf, c->buf + off, c->len - off);
            c->len -= off;
        }
        if (pf[0].revents & POLLIN) {
            int fd = accept(s->lfd, NULL, NULL);
            if (fd >= 0) {
                if (s->n_conns == s->cap_conns) {
                    int nc = s->cap_conns ? 2 * s->cap_conns : 16;
                    conn *ncs = realloc(s->conns, sizeof *ncs * (size_t)nc);
                    if (!ncs || s->n_conns >= 4 * MT_STORE_MAX_WORLD) {
                        if (ncs) s->conns = ncs;
                        close(fd);
                        continue;
                    }
                    s->conns = ncs;
                    s->cap_conns = nc;
                }
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                s->conns[s->n_conns++] = (conn){.fd = fd, .rank = -1};
            }
        }
    }
    free(pf);
    return NULL;
}

mt_status mt_store_server_start(const char *host, int port, int world, mt_store_server **out, int *port_out) {
    if (world < 1 || world > MT_STORE_MAX_WORLD)
        return mt_error(MT_ERR_INVALID_ARG, "rendezvous: world size %d out of range 1..%d", world, MT_STORE_MAX_WORLD);
    struct addrinfo *res;
    MT_TRY(resolve(host, port, 1, &res));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        int e = errno;
        freeaddrinfo(res);
        if (fd >= 0) close(fd);
        return mt_error(MT_ERR_NETWORK, "rendezvous: rank 0 cannot listen on %s:%d: %s", host, port, strerror(e));
    }
    freeaddrinfo(res);
    mt_store_server *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return mt_error(MT_ERR_NOMEM, "rendezvous: out of memory");
    }
    s->lfd = fd;
    s->world = world;
    s->state = calloc((size_t)world, sizeof *s->state);
    s->last_beat = calloc((size_t)world, sizeof *s->last_beat);
    if (!s->state || !s->last_beat || pipe2(s->wake, O_CLOEXEC) != 0) {
        free(s->state);
        free(s->last_beat);
        free(s);
        close(fd);
        return mt_error(MT_ERR_NOMEM, "rendezvous: out of memory");
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    if (port_out) *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                             : ((struct sockaddr_in *)&ss)->sin_port);
    s->running = 1;
    if (pthread_create(&s->th, NULL, server_main, s) != 0) {
        s->running = 0;
        mt_store_server_stop(s);
        return mt_error(MT_ERR_INTERNAL, "rendezvous: cannot start the server thread");
    }
    *out = s;
    return MT_OK;
}

void mt_store_server_linger(mt_store_server *s, double max_s) {
    if (!s) return;
    double end = mt_now_s() + max_s;
    while (atomic_load(&s->healthy) > 0 && mt_now_s() < end) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void mt_store_server_stop(mt_store_server *s) {
    if (!s) return;
    if (s->running) {
        if (write(s->wake[1], "x", 1) != 1) { /* the poll's 1 s timeout still ends it */
        }
        s->running = 0;
        pthread_join(s->th, NULL);
    }
    while (s->n_conns) drop_conn(s, s->n_conns - 1);
    for (int i = 0; i < s->n_kv; i++) {
        free(s->keys[i]);
        free(s->vals[i]);
    }
    free(s->keys);
    free(s->vals);
    free(s->lens);
    free(s->conns);
    free(s->state);
    free(s->last_beat);
    close(s->lfd);
    close(s->wake[0]);
    close(s->wake[1]);
    free(s);
}

/* ---- the client ---------------------------------------------------------------------------------- */

struct mt_store {
    int fd, beat_fd, rank, world;
    char host[256];
    int port;
    pthread_mutex_t mu;
    pthread_t beat_th;
    int beat_started;
    int beat_pipe[2];
};

/* Sends one request and, when want_reply, reads the reply frame (op, value malloc'd). */
static mt_status request(mt_store *s, int fd, int op, const char *key, const void *val, size_t len, double timeout_s,
                         int *rop, uint8_t **rval, size_t *rlen, const char *what) {
    size_t n;
    uint8_t *b = frame(op, s->rank, key, val, len, &n);
    if (!b) return mt_error(MT_ERR_NOMEM, "rendezvous: out of memory");
    double deadline = mt_now_s() + timeout_s;
    int w = write_all(fd, b, n, deadline);
    free(b);
    if (w != 0)
        return mt_error(MT_ERR_NETWORK, "rendezvous %s:%d (rank 0) %s: send failed: %s", s->host, s->port, what,
                        strerror(errno));
    if (!rop) return MT_OK;
    uint8_t hdr[HDR];
    int r = read_all(fd, hdr, HDR, deadline);
    if (r != 0)
        return mt_error(MT_ERR_NETWORK, "rendezvous %s:%d (rank 0) %s: %s", s->host, s->port, what,
                        r == 1 ? "connection closed by rank 0" : errno == ETIMEDOUT ? "no answer before the deadline"
                                                                                   : strerror(errno));
    uint32_t fl = get32(hdr), kl = get32(hdr + 9);
    if (fl < HDR - 4 || fl > MT_STORE_VALUE_MAX + MT_STORE_KEY_MAX + HDR || kl > fl - (HDR - 4))
        return mt_error(MT_ERR_NETWORK, "rendezvous %s:%d %s: malformed reply", s->host, s->port, what);
    size_t rest = fl - (HDR - 4);
    uint8_t *body = malloc(rest + 1);
    if (!body) return mt_error(MT_ERR_NOMEM, "rendezvous: out of memory");
    r = rest ? read_all(fd, body, rest, deadline) : 0;
    if (r != 0) {
        free(body);
        return mt_error(MT_ERR_NETWORK, "rendezvous %s:%d %s: reply cut short", s->host, s->port, what);
    }
    *rop = hdr[4];
    *rlen = rest - kl;
    memmove(body, body + kl, rest - kl);
    body[rest - kl] = 0;
    *rval = body;
    return MT_OK;
}

static mt_status connect_one(mt_store *s, double deadline, int beat, int *fd_out) {
    int last_err = 0;
    for (;;) {
        struct addrinfo *res;
        MT_TRY(resolve(s->host, s->port, 0, &res));
        int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int ok = fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) == 0;
        last_err = errno;
        freeaddrinfo(res);
        if (ok) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            uint8_t hello[5];
            put32(hello, (uint32_t)s->world);
            hello[4] = (uint8_t)beat;
            int rop;
            uint8_t *rv = NULL;
            size_t rl;
            double left = deadline - mt_now_s();
            mt_status st = request(s, fd, OP_HELLO, NULL, hello, sizeof hello, left > 5 ? left : 5, &rop, &rv, &rl, "hello");
            if (st == MT_OK && rop != OP_OK)
                st = mt_error(MT_ERR_CONFIG, "rendezvous refused rank %d: %s", s->rank, rv ? (char *)rv : "?");
            free(rv);
            if (st != MT_OK) {
                close(fd);
                return st;
            }
            *fd_out = fd;
            return MT_OK;
        }
        if (fd >= 0) close(fd);
        if (mt_now_s() >= deadline)
            return mt_error(MT_ERR_NETWORK, "rendezvous: rank %d cannot reach rank 0 at %s:%d before the deadline: %s",
                            s->rank, s->host, s->port, strerror(last_err));
        usleep(100000);
    }
}

static void *beat_main(void *arg) {
    mt_store *s = arg;
    for (;;) {
        struct pollfd p = {.fd = s->beat_pipe[0], .events = POLLIN};
        if (poll(&p, 1, (int)(HEARTBEAT_S * 1000)) != 0) break;
        if (request(s, s->beat_fd, OP_BEAT, NULL, NULL, 0, 2.0, NULL, NULL, NULL, "heartbeat") != MT_OK) break;
    }
    return NULL;
}

mt_status mt_store_connect(const char *host, int port, int rank, int world, double deadline_s, mt_store **out) {
    mt_store *s = calloc(1, sizeof *s);
    if (!s) return mt_error(MT_ERR_NOMEM, "rendezvous: out of memory");
    s->fd = s->beat_fd = -1;
    s->beat_pipe[0] = s->beat_pipe[1] = -1;
    s->rank = rank;
    s->world = world;
    s->port = port;
    snprintf(s->host, sizeof s->host, "%s", host);
    pthread_mutex_init(&s->mu, NULL);
    double deadline = mt_now_s() + deadline_s;
    mt_status st = connect_one(s, deadline, 0, &s->fd);
    if (st == MT_OK) st = connect_one(s, deadline, 1, &s->beat_fd);
    if (st == MT_OK && pipe2(s->beat_pipe, O_CLOEXEC) != 0) st = mt_error(MT_ERR_INTERNAL, "rendezvous: pipe failed");
    if (st == MT_OK) {
        if (pthread_create(&s->beat_th, NULL, beat_main, s) != 0)
            st = mt_error(MT_ERR_INTERNAL, "rendezvous: cannot start the heartbeat thread");
        else s->beat_started = 1;
    }
    if (st != MT_OK) {
        mt_store_drop(s);
        return st;
    }
    *out = s;
    return MT_OK;
}

static void store_free(mt_store *s, int bye) {
    if (!s) return;
    if (s->beat_started) {
        if (write(s->beat_pipe[1], "x", 1) != 1) { /* the heartbeat ends at its next send anyway */
        }
        pthread_join(s->beat_th, NULL);
    }
    if (bye && s->fd >= 0) request(s, s->fd, OP_BYE, NULL, NULL, 0, 1.0, NULL, NULL, NULL, "goodbye");
    if (s->fd >= 0) close(s->fd);
    if (s->beat_fd >= 0) close(s->beat_fd);
    if (s->beat_pipe[0] >= 0) close(s->beat_pipe[0]);
    if (s->beat_pipe[1] >= 0) close(s->beat_pipe[1]);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void mt_store_close(mt_store *s) { store_free(s, 1); }
void mt_store_drop(mt_store *s) { store_free(s, 0); }

mt_status mt_store_set(mt_store *s, const char *key, const void *val, size_t len) {
    if (strlen(key) > MT_STORE_KEY_MAX || len > MT_STORE_VALUE_MAX)
        return mt_error(MT_ERR_INVALID_ARG, "rendezvous set '%.64s': key or value too long", key);
    int rop;
    uint8_t *rv = NULL;
    size_t rl;
    pthread_mutex_lock(&s->mu);
    mt_status st = request(s, s->fd, OP_SET, key, val, len, 30.0, &rop, &rv, &rl, "set");
    pthread_mutex_unlock(&s->mu);
    if (st == MT_OK && rop != OP_OK) st = mt_error(MT_ERR_NETWORK, "rendezvous set '%s': %s", key, rv ? (char *)rv : "?");
    free(rv);
    return st;
}

mt_status mt_store_get(mt_store *s, const char *key, double timeout_s, void **val, size_t *len) {
    if (strlen(key) > MT_STORE_KEY_MAX) return mt_error(MT_ERR_INVALID_ARG, "rendezvous get: key too long");
    int rop;
    uint8_t *rv = NULL;
    size_t rl = 0;
    char what[MT_STORE_KEY_MAX + 16];
    snprintf(what, sizeof what, "get '%s'", key);
    pthread_mutex_lock(&s->mu);
    mt_status st = request(s, s->fd, OP_GET, key, NULL, 0, timeout_s, &rop, &rv, &rl, what);
    pthread_mutex_unlock(&s->mu);
    if (st != MT_OK) {
        /* A GET that timed out leaves the connection out of step with the server. */
        if (s->fd >= 0) shutdown(s->fd, SHUT_RDWR);
        return st;
    }
    if (rop == OP_ERR) st = mt_error(MT_ERR_CONFIG, "rendezvous refused: %s", rv ? (char *)rv : "?");
    else if (rop != OP_VAL) st = mt_error(MT_ERR_NETWORK, "rendezvous get '%s': unexpected reply", key);
    if (st != MT_OK) {
        free(rv);
        return st;
    }
    *val = rv;
    *len = rl;
    return MT_OK;
}

int mt_store_diagnose(mt_store *s, char *msg, size_t cap) {
    msg[0] = 0;
    int rop;
    uint8_t *rv = NULL;
    size_t rl = 0;
    pthread_mutex_lock(&s->mu);
    mt_status st = request(s, s->fd, OP_STATUS, NULL, NULL, 0, 3.0, &rop, &rv, &rl, "status");
    pthread_mutex_unlock(&s->mu);
    if (st != MT_OK || rop != OP_VAL || rl != (size_t)s->world * 5) {
        free(rv);
        if (s->rank == 0) return -1; /* its own server: nothing to learn */
        snprintf(msg, cap, "rank 0 (the rendezvous host) does not answer (%s)", st != MT_OK ? mt_last_error() : "bad reply");
        return 0;
    }
    int first = -1;
    size_t used = 0;
    for (int r = 0; r < s->world && used + 1 < cap; r++) {
        int state = rv[5 * r];
        double age = get32(rv + 5 * r + 1) / 1000.0;
        int n = 0;
        if (state == RANK_LOST) n = snprintf(msg + used, cap - used, "%srank %d died (its connection closed)", used ? "; " : "", r);
        else if (state == RANK_BYE && r != s->rank) n = snprintf(msg + used, cap - used, "%srank %d left", used ? "; " : "", r);
        else if (state == RANK_UP && r != s->rank && age > 4 * HEARTBEAT_S + 1.0)
            n = snprintf(msg + used, cap - used, "%srank %d stopped answering (no heartbeat for %.1f s)", used ? "; " : "", r, age);
        if (n > 0) {
            if (first < 0) first = r;
            used += (size_t)n < cap - used ? (size_t)n : cap - used - 1;
        }
    }
    free(rv);
    return first;
}
