/*
 * log.h — mt-server's log: one line per event on stderr, with a UTC timestamp and a level.
 * Thread-safe (lines from worker threads never interleave). The engine's own log is routed here too.
 */
#ifndef MT_NET_LOG_H
#define MT_NET_LOG_H

enum { MT_NLOG_DEBUG = 0, MT_NLOG_INFO = 1, MT_NLOG_WARN = 2, MT_NLOG_ERROR = 3 };

void mt_nlog_set_level(int level);
/* "debug" | "info" | "warn" | "error" -> level; -1 when unknown. */
int mt_nlog_parse_level(const char *s);
const char *mt_nlog_level_name(int level);
void mt_nlog(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define MT_LOGD(...) mt_nlog(MT_NLOG_DEBUG, __VA_ARGS__)
#define MT_LOGI(...) mt_nlog(MT_NLOG_INFO, __VA_ARGS__)
#define MT_LOGW(...) mt_nlog(MT_NLOG_WARN, __VA_ARGS__)
#define MT_LOGE(...) mt_nlog(MT_NLOG_ERROR, __VA_ARGS__)

#endif
