/*
 * error.c — the thread-local last-error message, status names and the internal-assert handler.
 */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

static _Thread_local char mt_last_error_buf[MT_ERROR_MAX];

mt_status mt_error(mt_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(mt_last_error_buf, sizeof mt_last_error_buf, fmt, ap);
    va_end(ap);
    return status;
}

mt_status mt_error_prefix(mt_status status, const char *fmt, ...) {
    char prefix[MT_ERROR_MAX], old[MT_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, mt_last_error_buf, sizeof old);
    size_t n = strnlen(prefix, sizeof prefix - 1);
    memcpy(mt_last_error_buf, prefix, n);
    size_t m = strnlen(old, sizeof old - 1);
    if (m > sizeof mt_last_error_buf - 1 - n) m = sizeof mt_last_error_buf - 1 - n;
    memcpy(mt_last_error_buf + n, old, m);
    mt_last_error_buf[n + m] = '\0';
    return status;
}

void mt_error_clear(void) { mt_last_error_buf[0] = '\0'; }

const char *mt_last_error(void) { return mt_last_error_buf; }

const char *mt_status_str(mt_status status) {
    switch (status) {
    case MT_OK: return "MT_OK";
    case MT_ERR_INVALID_ARG: return "MT_ERR_INVALID_ARG";
    case MT_ERR_SHAPE: return "MT_ERR_SHAPE";
    case MT_ERR_DTYPE: return "MT_ERR_DTYPE";
    case MT_ERR_DEVICE: return "MT_ERR_DEVICE";
    case MT_ERR_AXIS: return "MT_ERR_AXIS";
    case MT_ERR_NOMEM: return "MT_ERR_NOMEM";
    case MT_ERR_IO: return "MT_ERR_IO";
    case MT_ERR_FORMAT: return "MT_ERR_FORMAT";
    case MT_ERR_CHECKSUM: return "MT_ERR_CHECKSUM";
    case MT_ERR_CONFIG: return "MT_ERR_CONFIG";
    case MT_ERR_UTF8: return "MT_ERR_UTF8";
    case MT_ERR_BUFFER_TOO_SMALL: return "MT_ERR_BUFFER_TOO_SMALL";
    case MT_ERR_NO_DEVICE: return "MT_ERR_NO_DEVICE";
    case MT_ERR_CUDA: return "MT_ERR_CUDA";
    case MT_ERR_UNSUPPORTED: return "MT_ERR_UNSUPPORTED";
    case MT_ERR_CANCELLED: return "MT_ERR_CANCELLED";
    case MT_ERR_STATE: return "MT_ERR_STATE";
    case MT_ERR_INTERNAL: return "MT_ERR_INTERNAL";
    case MT_ERR_NCCL: return "MT_ERR_NCCL";
    case MT_ERR_NETWORK: return "MT_ERR_NETWORK";
    case MT_ERR_PERMISSION: return "MT_ERR_PERMISSION";
    case MT_ERR_NOT_FOUND: return "MT_ERR_NOT_FOUND";
    }
    return "MT_ERR_UNKNOWN";
}

char *mt_shape_str(char *buf, const int64_t *shape, int ndim) {
    size_t n = 0;
    buf[n++] = '(';
    for (int i = 0; i < ndim && n < MT_SHAPE_STR - 24; i++)
        n += (size_t)snprintf(buf + n, MT_SHAPE_STR - n, i ? ",%lld" : "%lld", (long long)shape[i]);
    buf[n++] = ')';
    buf[n] = '\0';
    return buf;
}

void mt_assert_fail(const char *cond, const char *file, int line) {
    mt_log(MT_LOG_ERROR, "internal invariant failed: %s at %s:%d", cond, file, line);
    abort();
}
