/*
 * writer.c — atomic file writing: the content goes to a temporary file in the target's directory,
 * which is fsynced, renamed over the target, and the directory fsynced, so a crash leaves either the
 * old file or the complete new one under the real name, never a torn one. `.zst` targets are
 * compressed on the fly with libzstd streaming.
 *
 * Everything happens relative to a directory descriptor (mt_writer_openat): the temporary file is
 * created with O_EXCL | O_NOFOLLOW and renamed over the name, so a symbolic link at either name is
 * never followed (a link at the target is replaced, not written through). mt_writer_open(path) opens
 * the path's directory and goes the same way.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/io.h"

#define MT_WRITER_BUF (1u << 16)

struct mt_writer {
    int fd;
    int dirfd;           /* the directory both names live in (owned) */
    char *path;          /* for messages: the path or name as the caller gave it */
    char *name, *tmp;    /* the target's and the temporary file's names in dirfd */
    ZSTD_CCtx *cctx;     /* NULL when not compressing */
    unsigned char *out;  /* bytes waiting to be written to fd (compressed or plain) */
    size_t out_cap, out_len;
};

static mt_status write_fd(mt_writer *w, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t k = write(w->fd, p, len);
        if (k < 0) {
            if (errno == EINTR) continue;
            return mt_error(MT_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
        }
        p += k;
        len -= (size_t)k;
    }
    return MT_OK;
}

static mt_status flush_out(mt_writer *w) {
    if (!w->out_len) return MT_OK;
    mt_status st = write_fd(w, w->out, w->out_len);
    w->out_len = 0;
    return st;
}

static void writer_free(mt_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->dirfd >= 0) close(w->dirfd);
    ZSTD_freeCCtx(w->cctx);
    mt_sys_free(w->out);
    mt_sys_free(w->tmp);
    mt_sys_free(w->name);
    mt_sys_free(w->path);
    mt_sys_free(w);
}

/* Creates "name.tmp.XXXXXX" in w->dirfd (6 random letters or digits), exclusively, never through a
 * link. */
static int create_tmp(mt_writer *w, size_t cap) {
    static const char set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned char r[6];
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
            uint64_t x = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)w ^ (uint64_t)attempt;
            for (int i = 0; i < 6; i++) r[i] = (unsigned char)(x >> (8 * i));
        }
        char suffix[7];
        for (int i = 0; i < 6; i++) suffix[i] = set[r[i] % (sizeof set - 1)];
        suffix[6] = 0;
        snprintf(w->tmp, cap, "%s.tmp.%s", w->name, suffix);
        int fd = openat(w->dirfd, w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    errno = EEXIST;
    return -1;
}

mt_status mt_writer_open(const char *path, const mt_writer_options *opt, mt_writer **out) {
    return mt_writer_openat(AT_FDCWD, path, opt, out);
}

mt_status mt_writer_openat(int dirfd, const char *path, const mt_writer_options *opt, mt_writer **out) {
    if (!path || !out || !*path) return mt_error(MT_ERR_INVALID_ARG, "mt_writer_open: NULL or empty path");
    if (dirfd != AT_FDCWD && strchr(path, '/'))
        return mt_error(MT_ERR_INVALID_ARG, "mt_writer_openat: '%s' is not a plain file name", path);
    mt_writer_options o = {-1, 0, 0};
    if (opt) o = *opt;
    int compress = o.compress < 0 ? mt_path_is_zst(path) : o.compress != 0;
    mt_writer *w = mt_sys_calloc(1, sizeof *w);
    if (!w) return mt_error(MT_ERR_NOMEM, "%s: out of memory", path);
    w->fd = -1;
    w->dirfd = -1;
    size_t n = strlen(path);
    w->path = mt_sys_strdup(path);
    char *dir = mt_sys_strdup(path), *base = mt_sys_strdup(path);
    w->name = base ? mt_sys_strdup(basename(base)) : NULL;
    w->tmp = mt_sys_malloc(n + 16);
    w->out_cap = compress ? ZSTD_CStreamOutSize() : MT_WRITER_BUF;
    w->out = mt_sys_malloc(w->out_cap);
    mt_sys_free(base);
    if (!w->path || !dir || !w->name || !w->tmp || !w->out) {
        mt_sys_free(dir);
        writer_free(w);
        return mt_error(MT_ERR_NOMEM, "%s: out of memory", path);
    }
    if (dirfd == AT_FDCWD) w->dirfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    else w->dirfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    mt_sys_free(dir);
    if (w->dirfd < 0) {
        mt_status st = mt_error(MT_ERR_IO, "%s: cannot open its directory: %s", path, strerror(errno));
        writer_free(w);
        return st;
    }
    w->fd = create_tmp(w, n + 16);
    if (w->fd < 0) {
        mt_status st = mt_error(MT_ERR_IO, "%s: cannot create temporary file %s: %s", path, w->tmp, strerror(errno));
        writer_free(w);
        return st;
    }
    /* mkstemp makes 0600; give the file the mode a plain open(2) would, under the umask. */
    mode_t um = umask(0);
    umask(um);
    if (fchmod(w->fd, (mode_t)(o.mode ? o.mode : 0666) & ~um) != 0) {
        mt_status st = mt_error(MT_ERR_IO, "%s: chmod failed: %s", w->tmp, strerror(errno));
        mt_writer_abort(w);
        return st;
    }
    if (compress) {
        w->cctx = ZSTD_createCCtx();
        if (!w->cctx) {
            mt_writer_abort(w);
            return mt_error(MT_ERR_NOMEM, "%s: out of memory (zstd context)", path);
        }
        size_t r = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, o.zstd_level ? o.zstd_level : ZSTD_CLEVEL_DEFAULT);
        if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
        if (ZSTD_isError(r)) {
            mt_writer_abort(w);
            return mt_error(MT_ERR_INVALID_ARG, "%s: zstd level %d: %s", path, o.zstd_level, ZSTD_getErrorName(r));
        }
    }
    *out = w;
    return MT_OK;
}

static mt_status compress_some(mt_writer *w, const void *data, size_t len, ZSTD_EndDirective mode) {
    ZSTD_inBuffer ib = {data, len, 0};
    for (;;) {
        ZSTD_outBuffer ob = {w->out, w->out_cap, w->out_len};
        size_t left = ZSTD_compressStream2(w->cctx, &ob, &ib, mode);
        if (ZSTD_isError(left)) return mt_error(MT_ERR_IO, "%s: zstd compression failed: %s", w->path, ZSTD_getErrorName(left));
        w->out_len = ob.pos;
        if (w->out_len == w->out_cap || (mode == ZSTD_e_end && left)) MT_TRY(flush_out(w));
        if (mode == ZSTD_e_end ? left == 0 : ib.pos == ib.size) return MT_OK;
    }
}

mt_status mt_writer_write(mt_writer *w, const void *data, size_t len) {
    if (!w || (!data && len)) return mt_error(MT_ERR_INVALID_ARG, "mt_writer_write: NULL argument");
    if (!len) return MT_OK;
    if (w->cctx) return compress_some(w, data, len, ZSTD_e_continue);
    if (w->out_len + len > w->out_cap) {
        MT_TRY(flush_out(w));
        if (len >= w->out_cap) return write_fd(w, data, len);
    }
    memcpy(w->out + w->out_len, data, len);
    w->out_len += len;
    return MT_OK;
}

mt_status mt_writer_commit(mt_writer *w) {
    if (!w) return mt_error(MT_ERR_INVALID_ARG, "mt_writer_commit: NULL writer");
    mt_status st = MT_OK;
    if (w->cctx) st = compress_some(w, "", 0, ZSTD_e_end);
    if (st == MT_OK) st = flush_out(w);
    if (st == MT_OK && fsync(w->fd) != 0) st = mt_error(MT_ERR_IO, "%s: fsync failed: %s", w->tmp, strerror(errno));
    if (st == MT_OK) {
        int fd = w->fd;
        w->fd = -1;
        if (close(fd) != 0) st = mt_error(MT_ERR_IO, "%s: close failed: %s", w->tmp, strerror(errno));
    }
    if (st == MT_OK && renameat(w->dirfd, w->tmp, w->dirfd, w->name) != 0)
        st = mt_error(MT_ERR_IO, "%s: rename from %s failed: %s", w->path, w->tmp, strerror(errno));
    if (st != MT_OK) {
        mt_writer_abort(w);
        return st;
    }
    /* The directory too, so that the rename itself is durable. */
    if (fsync(w->dirfd) != 0) st = mt_error(MT_ERR_IO, "%s: fsync of its directory failed: %s", w->path, strerror(errno));
    writer_free(w);
    return st;
}

void mt_writer_abort(mt_writer *w) {
    if (!w) return;
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    unlinkat(w->dirfd, w->tmp, 0);
    writer_free(w);
}

mt_status mt_file_write_atomic(const char *path, const void *data, size_t len) {
    return mt_file_write_atomic_at(AT_FDCWD, path, data, len);
}

mt_status mt_file_write_atomic_at(int dirfd, const char *path, const void *data, size_t len) {
    mt_writer *w = NULL;
    MT_TRY(mt_writer_openat(dirfd, path, NULL, &w));
    mt_status st = mt_writer_write(w, data, len);
    if (st != MT_OK) {
        mt_writer_abort(w);
        return st;
    }
    return mt_writer_commit(w);
}
