/*
 * reader.c — buffered file reading with transparent zstd decompression (streaming: a `.zst` corpus
 * or checkpoint is never expanded to a temporary file), line iteration and whole-file reads.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/io.h"

#define MT_READER_CHUNK (1u << 16)

struct mt_reader {
    int fd;
    char *path;
    int is_zst;
    int raw_eof;         /* the file has no more bytes */
    int eof;             /* no more content will be produced */
    ZSTD_DCtx *dctx;
    size_t zret;         /* last ZSTD_decompressStream result: 0 when a frame just ended */
    int zst_any;         /* some compressed bytes were seen (an empty .zst file is an empty file) */
    unsigned char *in;   /* compressed input */
    size_t in_cap, in_pos, in_end;
    char *buf;           /* decompressed content; [start, end) not handed out yet */
    size_t cap, start, end;
    size_t scan;         /* bytes of [start, end) already searched for '\n' */
    uint64_t lineno;
};

const char *mt_data_dir(void) {
    const char *d = getenv("MT_DATA_DIR");
    return d && *d ? d : "../shared/data";
}

int mt_path_is_zst(const char *path) {
    size_t n = strlen(path);
    return n >= 4 && strcmp(path + n - 4, ".zst") == 0;
}

mt_status mt_reader_open(const char *path, mt_reader **out) {
    if (!path || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_reader_open: NULL argument");
    /* O_NONBLOCK: opening a FIFO nobody writes to must not block; reads then block as usual. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        return mt_error(e == ENOENT ? MT_ERR_NOT_FOUND : MT_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        return mt_error(MT_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    mt_reader *r = mt_sys_calloc(1, sizeof *r);
    if (!r) {
        close(fd);
        return mt_error(MT_ERR_NOMEM, "%s: out of memory", path);
    }
    r->fd = fd;
    r->path = mt_sys_strdup(path);
    r->is_zst = mt_path_is_zst(path);
    r->cap = MT_READER_CHUNK * 4;
    r->buf = mt_sys_malloc(r->cap);
    if (r->is_zst) {
        r->in_cap = ZSTD_DStreamInSize();
        r->in = mt_sys_malloc(r->in_cap);
        r->dctx = ZSTD_createDCtx();
    }
    if (!r->path || !r->buf || (r->is_zst && (!r->in || !r->dctx))) {
        mt_reader_close(r);
        return mt_error(MT_ERR_NOMEM, "%s: out of memory", path);
    }
    *out = r;
    return MT_OK;
}

static mt_status read_raw(mt_reader *r, void *dst, size_t n, size_t *got) {
    for (;;) {
        ssize_t k = read(r->fd, dst, n);
        if (k >= 0) {
            *got = (size_t)k;
            if (k == 0) r->raw_eof = 1;
            return MT_OK;
        }
        if (errno != EINTR) return mt_error(MT_ERR_IO, "%s: read failed: %s", r->path, strerror(errno));
    }
}

/* Produces up to n content bytes into dst (decompressing when needed); *got == 0 only at the end. */
static mt_status produce(mt_reader *r, char *dst, size_t n, size_t *got) {
    *got = 0;
    if (r->eof || n == 0) return MT_OK;
    if (!r->is_zst) {
        MT_TRY(read_raw(r, dst, n, got));
        if (*got == 0) r->eof = 1;
        return MT_OK;
    }
    for (;;) {
        if (r->in_pos == r->in_end && !r->raw_eof) {
            size_t k = 0;
            MT_TRY(read_raw(r, r->in, r->in_cap, &k));
            r->in_pos = 0;
            r->in_end = k;
            if (k) r->zst_any = 1;
        }
        if (r->in_pos == r->in_end && r->raw_eof) {
            /* No input left: the decoder may still hold output of the last block. */
            ZSTD_inBuffer ib = {r->in, 0, 0};
            ZSTD_outBuffer ob = {dst, n, 0};
            size_t ret = r->zst_any ? ZSTD_decompressStream(r->dctx, &ob, &ib) : 0;
            if (ZSTD_isError(ret))
                return mt_error(MT_ERR_FORMAT, "%s: corrupt zstd data: %s", r->path, ZSTD_getErrorName(ret));
            if (ob.pos) {
                *got = ob.pos;
                return MT_OK;
            }
            if (r->zst_any && r->zret != 0)
                return mt_error(MT_ERR_FORMAT, "%s: truncated zstd stream (the last frame is incomplete)", r->path);
            r->eof = 1;
            return MT_OK;
        }
        ZSTD_inBuffer ib = {r->in, r->in_end, r->in_pos};
        ZSTD_outBuffer ob = {dst, n, 0};
        size_t ret = ZSTD_decompressStream(r->dctx, &ob, &ib);
        if (ZSTD_isError(ret))
            return mt_error(MT_ERR_FORMAT, "%s: corrupt zstd data: %s", r->path, ZSTD_getErrorName(ret));
        r->in_pos = ib.pos;
        r->zret = ret;
        if (ob.pos) {
            *got = ob.pos;
            return MT_OK;
        }
    }
}

/* Moves pending bytes to the front and appends more content; grows the buffer when it is full. */
static mt_status fill(mt_reader *r) {
    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    if (r->cap - r->end < MT_READER_CHUNK) {
        size_t ncap = r->cap * 2;
        char *nb = mt_sys_realloc(r->buf, ncap);
        if (!nb) return mt_error(MT_ERR_NOMEM, "%s: out of memory (a line longer than %zu bytes)", r->path, r->cap);
        r->buf = nb;
        r->cap = ncap;
    }
    size_t got = 0;
    /* Keep one byte free for the NUL that terminates a last line without "\n". */
    MT_TRY(produce(r, r->buf + r->end, r->cap - r->end - 1, &got));
    r->end += got;
    return MT_OK;
}

mt_status mt_reader_read(mt_reader *r, void *buf, size_t n, size_t *got) {
    if (!r || (!buf && n) || !got) return mt_error(MT_ERR_INVALID_ARG, "mt_reader_read: NULL argument");
    size_t have = r->end - r->start;
    if (have) {
        size_t k = have < n ? have : n;
        memcpy(buf, r->buf + r->start, k);
        r->start += k;
        r->scan = 0;
        *got = k;
        return MT_OK;
    }
    return produce(r, buf, n, got);
}

mt_status mt_reader_line(mt_reader *r, const char **line, size_t *len) {
    if (!r || !line || !len) return mt_error(MT_ERR_INVALID_ARG, "mt_reader_line: NULL argument");
    for (;;) {
        char *p = r->buf + r->start;
        size_t have = r->end - r->start;
        char *nl = r->scan < have ? memchr(p + r->scan, '\n', have - r->scan) : NULL;
        if (nl || (r->eof && have)) {
            size_t n = nl ? (size_t)(nl - p) : have;
            r->start += nl ? n + 1 : n;
            r->scan = 0;
            if (n && p[n - 1] == '\r') n--;
            p[n] = '\0';
            r->lineno++;
            *line = p;
            *len = n;
            return MT_OK;
        }
        if (r->eof) {
            *line = NULL;
            *len = 0;
            return MT_OK;
        }
        r->scan = have;
        MT_TRY(fill(r));
    }
}

uint64_t mt_reader_lineno(const mt_reader *r) { return r ? r->lineno : 0; }
const char *mt_reader_path(const mt_reader *r) { return r ? r->path : ""; }

void mt_reader_close(mt_reader *r) {
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    ZSTD_freeDCtx(r->dctx);
    mt_sys_free(r->in);
    mt_sys_free(r->buf);
    mt_sys_free(r->path);
    mt_sys_free(r);
}

mt_status mt_file_read_all(const char *path, char **data, size_t *len) {
    if (!path || !data || !len) return mt_error(MT_ERR_INVALID_ARG, "mt_file_read_all: NULL argument");
    mt_reader *r = NULL;
    MT_TRY(mt_reader_open(path, &r));
    size_t cap = 1u << 16, n = 0;
    char *out = mt_sys_malloc(cap);
    mt_status st = out ? MT_OK : mt_error(MT_ERR_NOMEM, "%s: out of memory", path);
    while (st == MT_OK) {
        if (cap - n < MT_READER_CHUNK) {
            char *nb = mt_sys_realloc(out, cap * 2);
            if (!nb) {
                st = mt_error(MT_ERR_NOMEM, "%s: out of memory (%zu bytes read)", path, n);
                break;
            }
            out = nb;
            cap *= 2;
        }
        size_t got = 0;
        st = mt_reader_read(r, out + n, cap - n - 1, &got);
        if (st != MT_OK || got == 0) break;
        n += got;
    }
    mt_reader_close(r);
    if (st != MT_OK) {
        mt_sys_free(out);
        return st;
    }
    out[n] = '\0';
    *data = out;
    *len = n;
    return MT_OK;
}
