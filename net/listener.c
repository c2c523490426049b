/*
 * listener.c — the protocol listener: address parsing, Redis-style protected mode (no token and a
 * non-loopback address: refuse to start unless --insecure), accepting, and backing off for a moment
 * when accept(2) fails for lack of descriptors instead of spinning.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <event2/listener.h>

#include "log.h"

int mt_resolve_hostport(const char *hostport, struct sockaddr_storage *ss, int *sslen, char *err, size_t errlen) {
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
        if (!colon || (size_t)(colon - hostport) >= sizeof host) goto bad;
        memcpy(host, hostport, (size_t)(colon - hostport));
        host[colon - hostport] = 0;
    }
    if (strlen(colon + 1) == 0 || strlen(colon + 1) >= sizeof port) goto bad;
    strcpy(port, colon + 1);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve '%s': %s", hostport, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = (int)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
bad:
    snprintf(err, errlen, "'%s' is not HOST:PORT", hostport);
    return -1;
}

bool mt_addr_is_loopback(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr)) return true;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) return a->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

void mt_addr_format(const struct sockaddr *sa, char *out, size_t n) {
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        snprintf(out, n, "%s:%d", host, ntohs(a->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        snprintf(out, n, "[%s]:%d", host, ntohs(a->sin6_port));
    } else {
        snprintf(out, n, "?");
    }
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg) {
    (void)l;
    mt_conn_accept(arg, fd, sa, salen);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    mt_server *s = arg;
    if (s->listener && !s->draining) evconnlistener_enable(s->listener);
}

static void accept_error_cb(struct evconnlistener *l, void *arg) {
    mt_server *s = arg;
    int e = EVUTIL_SOCKET_ERROR();
    MT_LOGW("accept: %s; pausing accepts for 100 ms", evutil_socket_error_to_string(e));
    evconnlistener_disable(l);
    struct timeval tv = {0, 100000};
    evtimer_add(s->listen_retry, &tv);
}

int mt_listen_start(mt_server *s, char *err, size_t errlen) {
    struct sockaddr_storage ss;
    int sslen;
    if (mt_resolve_hostport(s->opt->listen, &ss, &sslen, err, errlen) != 0) return -1;
    if (!mt_addr_is_loopback((struct sockaddr *)&ss) && !mt_auth_enabled(&s->auth)) {
        if (!s->opt->insecure) {
            snprintf(err, errlen,
                     "refusing to listen on %s, a non-loopback address, without a token: set --token-file "
                     "(and --admin-token-file), or pass --insecure if the network is trusted",
                     s->opt->listen);
            return -1;
        }
        MT_LOGW("listening on %s without a token (--insecure): anyone who can connect is an admin", s->opt->listen);
    }
    s->listener = evconnlistener_new_bind(s->base, accept_cb, s,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 511,
                                          (struct sockaddr *)&ss, sslen);
    if (!s->listener) {
        snprintf(err, errlen, "cannot listen on %s: %s", s->opt->listen, strerror(errno));
        return -1;
    }
    evconnlistener_set_error_cb(s->listener, accept_error_cb);
    s->listen_retry = evtimer_new(s->base, retry_cb, s);
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    getsockname(evconnlistener_get_fd(s->listener), (struct sockaddr *)&bound, &bl);
    mt_addr_format((struct sockaddr *)&bound, s->listen_addr, sizeof s->listen_addr);
    return 0;
}

void mt_listen_stop(mt_server *s) {
    if (s->listener) evconnlistener_free(s->listener);
    s->listener = NULL;
    if (s->listen_retry) event_free(s->listen_retry);
    s->listen_retry = NULL;
}
