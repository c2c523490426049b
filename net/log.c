/*
 * log.c — levelled stderr log of mt-server. Each line is formatted in full and written with one
 * write(2) so lines from the loop thread, the engine workers and the trainer never interleave.
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = MT_NLOG_INFO;
static const char *const g_names[] = {"debug", "info", "warn", "error"};

void mt_nlog_set_level(int level) { atomic_store(&g_level, level); }

int mt_nlog_parse_level(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, g_names[i]) == 0) return i;
    if (strcasecmp(s, "warning") == 0) return MT_NLOG_WARN;
    return -1;
}

const char *mt_nlog_level_name(int level) {
    return level >= 0 && level < 4 ? g_names[level] : "?";
}

void mt_nlog(int level, const char *fmt, ...) {
    if (level < atomic_load(&g_level)) return;
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ mt-server[%d] %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), (int)getpid(), g_names[level < 0 ? 0 : level > 3 ? 3 : level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2) len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
