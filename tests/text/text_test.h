/*
 * text_test.h — helpers shared by the tests of engine/text and engine/io: temporary directories,
 * writing files, finding the real corpora and the Python of the comparisons (skipping with exit
 * code 77 and a message when they are absent), running a command.
 */
#ifndef MT_TEXT_TEST_H
#define MT_TEXT_TEST_H

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/io.h"

#define TT_SKIP 77

/* A fresh directory under $TMPDIR (or /tmp); removed with its files by tt_rmdir. */
static inline char *tt_mkdtemp(char *buf, size_t cap) {
    const char *base = getenv("TMPDIR");
    snprintf(buf, cap, "%s/mt-text-test-XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(buf);
}

static inline void tt_rmdir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static inline void tt_path(char *buf, size_t cap, const char *dir, const char *name) { snprintf(buf, cap, "%s/%s", dir, name); }

static inline int tt_write(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

static inline int tt_write_str(const char *path, const char *s) { return tt_write(path, s, strlen(s)); }

/* Runs a shell command; returns its exit status (-1 if it could not run). */
static inline int tt_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int tt_system(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int r = system(cmd);
    return r == -1 ? -1 : WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

/* $MT_DATA_DIR/name when it exists, else NULL (the caller skips). */
static inline const char *tt_data_file(const char *name, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", mt_data_dir(), name);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

/* The Python of the comparisons ($MT_TORCH_PYTHON, else /usr/bin/python3) when it can import
 * module, else NULL. */
static inline const char *tt_python_with(const char *module) {
    const char *py = getenv("MT_TORCH_PYTHON");
    if (!py || !*py) py = "/usr/bin/python3";
    if (access(py, X_OK) != 0) return NULL;
    return tt_system("'%s' -c 'import %s' >/dev/null 2>&1", py, module) == 0 ? py : NULL;
}

static inline const char *tt_source_dir(void) {
    const char *s = getenv("MT_SOURCE_DIR");
    return s && *s ? s : ".";
}

static inline const char *tt_build_dir(void) {
    const char *s = getenv("MT_BUILD_DIR");
    return s && *s ? s : "build";
}

#endif
