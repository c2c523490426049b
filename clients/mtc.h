/*
 * mtc.h — a small blocking client of the mt.v1 protocol, shared by mt-client, the load generator
 * (mt-bench serve) and the tests: connect over TCP or TLS (OpenSSL, with certificate and host name
 * verification), Hello, and send/receive whole frames with a deadline. Non-blocking sockets and
 * poll(2) underneath, so a timeout never leaves half a frame behind: a later mtc_recv resumes it.
 */
#ifndef MT_CLIENTS_MTC_H
#define MT_CLIENTS_MTC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "token_file.h" /* mt_token_file_read: token files as the server reads them */

typedef struct mtc_conn mtc_conn;

enum { MTC_OK = 0, MTC_EOF = 1, MTC_TIMEOUT = 2, MTC_ERR = -1 };

typedef struct mtc_tls {
    bool enabled;
    const char *ca_file;     /* NULL: the system's trust store */
    const char *server_name; /* NULL: the host of host:port */
} mtc_tls;

/* Connects to "host:port" ("[v6]:port"). Returns MTC_OK, or MTC_ERR/MTC_TIMEOUT with err filled. */
int mtc_connect(const char *hostport, const mtc_tls *tls, int timeout_ms, mtc_conn **out, char *err, size_t errlen);
void mtc_close(mtc_conn *c);
int mtc_fd(const mtc_conn *c);
/* The last I/O error's text. */
const char *mtc_error(const mtc_conn *c);
/* Frames longer than this are refused by mtc_recv (default 64 MiB). */
void mtc_set_max_frame(mtc_conn *c, uint64_t max);

int mtc_send(mtc_conn *c, const mt_frame *f, int timeout_ms);
int mtc_send_raw(mtc_conn *c, const void *data, size_t n, int timeout_ms);
/* Half-closes the write side (plain TCP only; TLS sends close_notify). */
void mtc_shutdown_write(mtc_conn *c);
/* Receives one frame: MTC_OK with *out (mt_frame_free it), MTC_EOF, MTC_TIMEOUT, or MTC_ERR
 * (I/O error, an oversized or undecodable frame). timeout_ms < 0 waits forever. */
int mtc_recv(mtc_conn *c, int timeout_ms, mt_frame **out);

/* Sends Hello (id 1) with token (may be NULL) and waits for the answer. Returns 0 on HelloOk
 * (*ok_out, when not NULL, receives the frame: mt_frame_free it), the Error's code (> 0) with its
 * message in err, or -1 for a transport failure (err says which). */
int mtc_hello(mtc_conn *c, const char *token, const char *client_name, int timeout_ms, mt_frame **ok_out,
              char *err, size_t errlen);

#endif
