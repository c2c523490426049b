/*
 * error.h — statuses and the thread-local last-error message.
 *
 * Library code reports a failure by returning mt_error(status, "op: what was wrong"), which records the
 * message for mt_last_error() and hands the status back. MT_TRY propagates a failing status.
 * MT_ASSERT guards internal invariants only (a bug if it fires), never bad input.
 */
#ifndef MT_CORE_ERROR_H
#define MT_CORE_ERROR_H

#include <stdint.h>
#include "microtensor.h"

#define MT_ERROR_MAX 1024

/* Records the formatted message as this thread's last error and returns status. */
mt_status mt_error(mt_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current last-error message ("loading model.mt: " + old message) and returns status. */
mt_status mt_error_prefix(mt_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mt_error_clear(void);

/* Writes "(2,3,4)" into buf (at least MT_SHAPE_STR bytes). Returns buf. */
#define MT_SHAPE_STR 96
char *mt_shape_str(char *buf, const int64_t *shape, int ndim);

#define MT_TRY(expr)                         \
    do {                                     \
        mt_status mt_try_s_ = (expr);        \
        if (mt_try_s_ != MT_OK) return mt_try_s_; \
    } while (0)

void mt_assert_fail(const char *cond, const char *file, int line) __attribute__((noreturn));
#define MT_ASSERT(cond) ((cond) ? (void)0 : mt_assert_fail(#cond, __FILE__, __LINE__))

#endif
