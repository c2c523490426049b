/*
 * log.c — the library's log. One callback (or stderr) and one level for the process; both are read
 * and written atomically so any thread may log while another reconfigures.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <pthread.h>

static _Atomic int mt_log_level_cur = MT_LOG_WARN;
static pthread_mutex_t mt_log_mu = PTHREAD_MUTEX_INITIALIZER;
static mt_log_fn mt_log_cb = NULL;
static void *mt_log_user = NULL;

void mt_log_set_callback(mt_log_fn fn, void *user) {
    pthread_mutex_lock(&mt_log_mu);
    mt_log_cb = fn;
    mt_log_user = user;
    pthread_mutex_unlock(&mt_log_mu);
}

void mt_log_set_level(mt_log_level level) {
    if (level < MT_LOG_DEBUG) level = MT_LOG_DEBUG;
    if (level > MT_LOG_OFF) level = MT_LOG_OFF;
    atomic_store(&mt_log_level_cur, (int)level);
}

int mt_log_enabled(mt_log_level level) { return (int)level >= atomic_load(&mt_log_level_cur) && level < MT_LOG_OFF; }

void mt_log(mt_log_level level, const char *fmt, ...) {
    if (!mt_log_enabled(level)) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&mt_log_mu);
    mt_log_fn fn = mt_log_cb;
    void *user = mt_log_user;
    pthread_mutex_unlock(&mt_log_mu);
    if (fn) {
        fn(level, msg, user);
        return;
    }
    static const char *names[] = {"debug", "info", "warn", "error"};
    fprintf(stderr, "microtensor %s: %s\n", names[level], msg);
}
