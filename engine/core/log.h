/*
 * log.h — the library's log: levelled lines to a user callback or stderr.
 */
#ifndef MT_CORE_LOG_H
#define MT_CORE_LOG_H

#include "microtensor.h"

void mt_log(mt_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int mt_log_enabled(mt_log_level level);

#endif
