/*
 * buf.h — growable byte and int32 buffers used throughout the text pipeline.
 * A zeroed struct is an empty buffer; *_free leaves it empty again.
 */
#ifndef MT_TEXT_BUF_H
#define MT_TEXT_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

typedef struct mt_buf {
    char *p;  /* bytes, kept NUL-terminated after every append (p[n] == 0) */
    size_t n; /* bytes used, not counting the NUL */
    size_t cap;
} mt_buf;

typedef struct mt_ids {
    int32_t *v; /* (n,) token ids */
    size_t n;
    size_t cap;
} mt_ids;

static inline mt_status mt_buf_reserve(mt_buf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return MT_OK;
    size_t nc = b->cap ? b->cap * 2 : 256;
    while (nc < b->n + extra + 1) nc *= 2;
    char *np = mt_sys_realloc(b->p, nc);
    if (!np) return mt_error(MT_ERR_NOMEM, "out of memory (%zu bytes)", nc);
    b->p = np;
    b->cap = nc;
    return MT_OK;
}

static inline mt_status mt_buf_append(mt_buf *b, const void *data, size_t len) {
    mt_status st = mt_buf_reserve(b, len);
    if (st != MT_OK) return st;
    if (len) memcpy(b->p + b->n, data, len);
    b->n += len;
    b->p[b->n] = '\0';
    return MT_OK;
}

static inline mt_status mt_buf_putc(mt_buf *b, char c) { return mt_buf_append(b, &c, 1); }

/* Appends s[0..n) to b with every occurrence of pat (pl bytes; none when pl is 0) replaced by rep. */
static inline mt_status mt_buf_append_replaced(mt_buf *b, const char *s, size_t n, const char *pat, size_t pl,
                                               const char *rep, size_t rl) {
    size_t i = 0;
    while (pl && i + pl <= n) {
        const char *m = memmem(s + i, n - i, pat, pl);
        if (!m) break;
        size_t at = (size_t)(m - s);
        mt_status st = mt_buf_append(b, s + i, at - i);
        if (st == MT_OK) st = mt_buf_append(b, rep, rl);
        if (st != MT_OK) return st;
        i = at + pl;
    }
    return mt_buf_append(b, s + i, n - i);
}

static inline void mt_buf_clear(mt_buf *b) {
    b->n = 0;
    if (b->p) b->p[0] = '\0';
}

static inline void mt_buf_free(mt_buf *b) {
    mt_sys_free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

static inline mt_status mt_ids_reserve(mt_ids *v, size_t extra) {
    if (v->n + extra <= v->cap) return MT_OK;
    size_t nc = v->cap ? v->cap * 2 : 64;
    while (nc < v->n + extra) nc *= 2;
    int32_t *np = mt_sys_realloc(v->v, nc * sizeof *np);
    if (!np) return mt_error(MT_ERR_NOMEM, "out of memory (%zu ids)", nc);
    v->v = np;
    v->cap = nc;
    return MT_OK;
}

static inline mt_status mt_ids_push(mt_ids *v, int32_t id) {
    if (v->n == v->cap) {
        mt_status st = mt_ids_reserve(v, 1);
        if (st != MT_OK) return st;
    }
    v->v[v->n++] = id;
    return MT_OK;
}

static inline void mt_ids_free(mt_ids *v) {
    mt_sys_free(v->v);
    v->v = NULL;
    v->n = v->cap = 0;
}

#endif
