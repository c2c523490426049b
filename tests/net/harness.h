/*
 * harness.h — helpers of the server integration tests: start a server binary on ephemeral loopback
 * ports in a scratch directory (its stderr in server.log there), connect and say Hello, exchange
 * frames, read /metrics, stop it with a signal and get its exit status.
 */
#ifndef MT_TEST_HARNESS_H
#define MT_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "frame.h"
#include "mtc.h"

#define TH_TIMEOUT_MS 10000

typedef struct th_server {
    pid_t pid;
    char dir[512];       /* scratch directory (the data root unless told otherwise) */
    char addr[256];      /* host:port of the protocol listener */
    char http[256];      /* host:port of /metrics, "" when off */
    char log[600];
    bool tls;
    char ca[600];        /* the CA to trust when tls */
} th_server;

const char *th_build_dir(void);
const char *th_source_dir(void);

/* A fresh scratch directory (removed by th_rmdir). */
void th_mkdtemp(char *out, size_t n);
void th_rmdir(const char *dir);
void th_write_file(const char *path, const char *text);
bool th_file_exists(const char *path);

/* Starts `binary` (a path) with args (NULL-terminated; "--listen", "--http", "--port-file" and
 * "--data-root" are added unless given) in dir (NULL: a new scratch dir). Returns 0, or -1 when the
 * server exited or did not listen within 20 s (*exit_status then holds its status if it exited). */
int th_server_start(th_server *s, const char *binary, const char *dir, const char *const *args, int *exit_status);
/* Signals the server and waits up to timeout_ms; returns its exit status (128+sig if signalled,
 * -1 if it had to be killed). */
int th_server_stop(th_server *s, int sig, int timeout_ms);
void th_server_dump_log(const th_server *s);
bool th_server_log_contains(const th_server *s, const char *needle);

/* Connects (TLS when s->tls); NULL on failure (message on stderr). */
mtc_conn *th_connect_raw(const th_server *s);
/* Connects and says Hello with token; asserts HelloOk. */
mtc_conn *th_connect(const th_server *s, const char *token);

/* Frame builders (static storage inside; valid until the next call of the same builder). */
int th_send_translate(mtc_conn *c, uint64_t id, const char *const *texts, size_t n, uint32_t beam);
int th_send_body(mtc_conn *c, uint64_t id, int body_case, void *body);
/* Receives one frame (asserts one arrives within TH_TIMEOUT_MS). */
mt_frame *th_recv(mtc_conn *c);
/* Receives the next frame and asserts it is an Error with code (and id, and fatal); when fatal,
 * also asserts the server then closes. */
void th_expect_error(mtc_conn *c, uint64_t id, int code, bool fatal);
/* Asserts that the connection is closed by the server (EOF within TH_TIMEOUT_MS). */
void th_expect_eof(mtc_conn *c);
/* Translates one text on c and returns the translation (malloc'd). */
char *th_translate1(mtc_conn *c, uint64_t id, const char *text, uint32_t beam);
/* Asserts a new connection can translate: the server still serves others. */
void th_assert_serving(const th_server *s, const char *token);

/* GET http://hostport/path: returns the status and *body (malloc'd). */
int th_http_get(const char *hostport, const char *path, char **body);
/* The value of a /metrics sample ("mt_limit_hits_total{limit=\"max_chars\"}"), -1 when absent. */
double th_metric(const th_server *s, const char *sample);

/* A raw frame: 4-byte length + body bytes as given. */
int th_send_raw_frame(mtc_conn *c, const void *body, uint32_t len);

#endif
