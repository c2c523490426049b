/*
 * harness.c — the server integration tests' helpers (see harness.h).
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

const char *th_build_dir(void) {
    const char *d = getenv("MT_BUILD_DIR");
    return d && *d ? d : "build";
}

const char *th_source_dir(void) {
    const char *d = getenv("MT_SOURCE_DIR");
    return d && *d ? d : ".";
}

void th_mkdtemp(char *out, size_t n) {
    const char *t = getenv("TMPDIR");
    snprintf(out, n, "%s/mt-net-test.XXXXXX", t && *t ? t : "/tmp");
    assert_non_null(mkdtemp(out));
    char real[512];
    assert_non_null(realpath(out, real));
    snprintf(out, n, "%s", real);
}

void th_rmdir(const char *dir) {
    if (!dir[0] || strstr(dir, "mt-net-test.") == NULL) return;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

void th_write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

bool th_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool read_ports(th_server *s, const char *file) {
    FILE *f = fopen(file, "r");
    if (!f) return false;
    char line[256];
    bool got = false;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "listen=", 7)) {
            snprintf(s->addr, sizeof s->addr, "%s", line + 7);
            got = true;
        } else if (!strncmp(line, "http=", 5)) {
            snprintf(s->http, sizeof s->http, "%s", strcmp(line + 5, "off") ? line + 5 : "");
        }
    }
    fclose(f);
    return got;
}

static bool has_arg(const char *const *args, const char *name) {
    for (int i = 0; args && args[i]; i++)
        if (!strcmp(args[i], name)) return true;
    return false;
}

int th_server_start(th_server *s, const char *binary, const char *dir, const char *const *args, int *exit_status) {
    memset(s, 0, sizeof *s);
    if (dir) snprintf(s->dir, sizeof s->dir, "%s", dir);
    else th_mkdtemp(s->dir, sizeof s->dir);
    snprintf(s->log, sizeof s->log, "%s/server.log", s->dir);
    char portfile[600];
    snprintf(portfile, sizeof portfile, "%s/ports.%d", s->dir, (int)time(NULL) ^ rand());
    unlink(portfile);
    const char *argv[96];
    int n = 0;
    argv[n++] = binary;
    if (!has_arg(args, "--listen")) {
        argv[n++] = "--listen";
        argv[n++] = "127.0.0.1:0";
    }
    if (!has_arg(args, "--http")) {
        argv[n++] = "--http";
        argv[n++] = "127.0.0.1:0";
    }
    if (!has_arg(args, "--data-root")) {
        argv[n++] = "--data-root";
        argv[n++] = s->dir;
    }
    argv[n++] = "--port-file";
    argv[n++] = portfile;
    for (int i = 0; args && args[i] && n < 94; i++) {
        argv[n++] = args[i];
        if (!strcmp(args[i], "--tls-cert")) s->tls = true;
    }
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
        }
        execv(binary, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", binary, strerror(errno));
        _exit(127);
    }
    s->pid = pid;
    for (int waited = 0; waited < 20000; waited += 10) {
        if (read_ports(s, portfile)) return 0;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            if (exit_status) *exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            return -1;
        }
        sleep_ms(10);
    }
    th_server_stop(s, SIGKILL, 1000);
    return -1;
}

int th_server_stop(th_server *s, int sig, int timeout_ms) {
    if (s->pid <= 0) return -1;
    kill(s->pid, sig);
    int st;
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        sleep_ms(10);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    s->pid = 0;
    return -1;
}

void th_server_dump_log(const th_server *s) {
    FILE *f = fopen(s->log, "r");
    if (!f) return;
    fprintf(stderr, "---- %s ----\n", s->log);
    char line[2048];
    while (fgets(line, sizeof line, f)) fputs(line, stderr);
    fprintf(stderr, "----\n");
    fclose(f);
}

bool th_server_log_contains(const th_server *s, const char *needle) {
    FILE *f = fopen(s->log, "r");
    if (!f) return false;
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

mtc_conn *th_connect_raw(const th_server *s) {
    mtc_tls tls = {s->tls, s->tls ? s->ca : NULL, NULL};
    mtc_conn *c = NULL;
    char err[512];
    if (mtc_connect(s->addr, &tls, TH_TIMEOUT_MS, &c, err, sizeof err) != MTC_OK) {
        fprintf(stderr, "connect %s: %s\n", s->addr, err);
        return NULL;
    }
    return c;
}

mtc_conn *th_connect(const th_server *s, const char *token) {
    mtc_conn *c = th_connect_raw(s);
    assert_non_null(c);
    char err[512];
    int rc = mtc_hello(c, token, "harness", TH_TIMEOUT_MS, NULL, err, sizeof err);
    if (rc != 0) fprintf(stderr, "hello: %s\n", err);
    assert_int_equal(rc, 0);
    return c;
}

int th_send_translate(mtc_conn *c, uint64_t id, const char *const *texts, size_t n, uint32_t beam) {
    Mt__V1__TranslateRequest t = MT__V1__TRANSLATE_REQUEST__INIT;
    t.n_texts = n;
    t.texts = (char **)texts;
    t.beam_size = beam;
    mt_frame f = MT__V1__FRAME__INIT;
    f.id = id;
    f.body_case = MT__V1__FRAME__BODY_TRANSLATE;
    f.translate = &t;
    return mtc_send(c, &f, TH_TIMEOUT_MS);
}

int th_send_body(mtc_conn *c, uint64_t id, int body_case, void *body) {
    mt_frame f = MT__V1__FRAME__INIT;
    f.id = id;
    f.body_case = (Mt__V1__Frame__BodyCase)body_case;
    f.hello = body; /* a union: any member */
    return mtc_send(c, &f, TH_TIMEOUT_MS);
}

mt_frame *th_recv(mtc_conn *c) {
    mt_frame *f = NULL;
    int rc = mtc_recv(c, TH_TIMEOUT_MS, &f);
    if (rc != MTC_OK) fprintf(stderr, "recv: %d %s\n", rc, mtc_error(c));
    assert_int_equal(rc, MTC_OK);
    return f;
}

void th_expect_eof(mtc_conn *c) {
    mt_frame *f = NULL;
    int rc = mtc_recv(c, TH_TIMEOUT_MS, &f);
    if (rc == MTC_OK) {
        fprintf(stderr, "expected EOF, got a frame id %llu body %d\n", (unsigned long long)f->id, (int)f->body_case);
        mt_frame_free(f);
    }
    assert_int_equal(rc, MTC_EOF);
}

void th_expect_error(mtc_conn *c, uint64_t id, int code, bool fatal) {
    mt_frame *f = th_recv(c);
    if (f->body_case != MT__V1__FRAME__BODY_ERROR || (int)f->error->code != code)
        fprintf(stderr, "expected %s, got body %d %s: %s\n", mt_error_code_name(code), (int)f->body_case,
                f->body_case == MT__V1__FRAME__BODY_ERROR ? mt_error_code_name((int)f->error->code) : "",
                f->body_case == MT__V1__FRAME__BODY_ERROR ? f->error->message : "");
    assert_int_equal(f->body_case, MT__V1__FRAME__BODY_ERROR);
    assert_int_equal(f->error->code, code);
    assert_int_equal(f->id, id);
    assert_int_equal(!!f->error->fatal, fatal);
    assert_true(strlen(f->error->message) > 0);
    mt_frame_free(f);
    if (fatal) th_expect_eof(c);
}

char *th_translate1(mtc_conn *c, uint64_t id, const char *text, uint32_t beam) {
    const char *texts[1] = {text};
    assert_int_equal(th_send_translate(c, id, texts, 1, beam), MTC_OK);
    mt_frame *f = th_recv(c);
    if (f->body_case == MT__V1__FRAME__BODY_ERROR) fprintf(stderr, "translate: %s\n", f->error->message);
    assert_int_equal(f->body_case, MT__V1__FRAME__BODY_TRANSLATE_OK);
    assert_int_equal(f->id, id);
    assert_int_equal(f->translate_ok->n_texts, 1);
    char *out = strdup(f->translate_ok->texts[0]);
    mt_frame_free(f);
    return out;
}

void th_assert_serving(const th_server *s, const char *token) {
    mtc_conn *c = th_connect(s, token);
    char *t = th_translate1(c, 99, "still here", 0);
    assert_non_null(strstr(t, "<STILL HERE>"));
    free(t);
    mtc_close(c);
}

int th_http_get(const char *hostport, const char *path, char **body) {
    mtc_conn *c = NULL;
    char err[256];
    assert_int_equal(mtc_connect(hostport, NULL, TH_TIMEOUT_MS, &c, err, sizeof err), MTC_OK);
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", path);
    assert_int_equal(mtc_send_raw(c, req, (size_t)n, TH_TIMEOUT_MS), MTC_OK);
    /* Read everything until the server closes (mtc_recv's buffer cannot be used: not frames). */
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    int fd = mtc_fd(c);
    for (int waited = 0; waited < TH_TIMEOUT_MS;) {
        if (len + 4096 > cap) buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r > 0) {
            len += (size_t)r;
            continue;
        }
        if (r == 0) break;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            sleep_ms(5);
            waited += 5;
            continue;
        }
        break;
    }
    buf[len] = 0;
    mtc_close(c);
    int status = 0;
    sscanf(buf, "HTTP/1.%*d %d", &status);
    char *b = strstr(buf, "\r\n\r\n");
    *body = strdup(b ? b + 4 : "");
    free(buf);
    return status;
}

double th_metric(const th_server *s, const char *sample) {
    char *body = NULL;
    assert_int_equal(th_http_get(s->http, "/metrics", &body), 200);
    double v = -1;
    size_t n = strlen(sample);
    for (char *line = strtok(body, "\n"); line; line = strtok(NULL, "\n"))
        if (!strncmp(line, sample, n) && line[n] == ' ') v = atof(line + n + 1);
    free(body);
    return v;
}

int th_send_raw_frame(mtc_conn *c, const void *body, uint32_t len) {
    uint8_t h[4];
    mt_frame_put_len(h, len);
    int rc = mtc_send_raw(c, h, 4, TH_TIMEOUT_MS);
    if (rc == MTC_OK && len) rc = mtc_send_raw(c, body, len, TH_TIMEOUT_MS);
    return rc;
}
