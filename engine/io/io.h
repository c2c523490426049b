/*
 * io.h — shared file helpers: a buffered reader that decompresses `.zst` on the fly (lines or whole
 * file), an atomic writer (temporary file in the same directory, fsync, rename, fsync of the
 * directory) that can compress `.zst` on write, and SHA-256 through OpenSSL EVP.
 *
 * The corpus reader, the tokenizer and the model/checkpoint code all read and write through here so
 * that every path may be zstd-compressed and no writer ever leaves a half-written file under the
 * real name. Errors name the path (and the line where there is one).
 */
#ifndef MT_IO_IO_H
#define MT_IO_IO_H

#include <stddef.h>
#include <stdint.h>

#include "microtensor.h"

/* Where the real corpora are: $MT_DATA_DIR, else "../shared/data" (beside the checkout, where the
 * machines that build this project lay them; docs/ARCHITECTURE.md). A corpus path in a training config
 * may start with "$MT_DATA_DIR/". Never NULL. */
const char *mt_data_dir(void);

/* True when path ends in ".zst" (the reader then decompresses, the writer compresses). */
int mt_path_is_zst(const char *path);

/* ---- reader ---------------------------------------------------------------------------------- */

typedef struct mt_reader mt_reader;

/* Opens path for reading; a `.zst` path is decompressed as it is read (libzstd streaming, several
 * concatenated frames allowed, no temporary file). MT_ERR_NOT_FOUND when the file does not exist,
 * MT_ERR_IO when it cannot be opened, MT_ERR_NOMEM. */
mt_status mt_reader_open(const char *path, mt_reader **out);
/* Reads up to n bytes of (decompressed) content; *got == 0 means end of file. MT_ERR_IO on a read
 * error, MT_ERR_FORMAT on a corrupt or truncated zstd stream. */
mt_status mt_reader_read(mt_reader *r, void *buf, size_t n, size_t *got);
/* The next line, without its "\n" (nor a "\r" before it). *line points into the reader's buffer
 * and stays valid until the next call; it is NUL-terminated, and *len is its length (a line may
 * contain NUL bytes: trust *len). At end of file *line is NULL. A last line without "\n" is still a
 * line. Errors as mt_reader_read. */
mt_status mt_reader_line(mt_reader *r, const char **line, size_t *len);
/* 1-based number of the line last returned by mt_reader_line (0 before the first). */
uint64_t mt_reader_lineno(const mt_reader *r);
const char *mt_reader_path(const mt_reader *r);
void mt_reader_close(mt_reader *r);

/* The whole (decompressed) content of path in a new buffer (mt_sys_free it) with a NUL after the
 * last byte; *len excludes the NUL. Errors as mt_reader_open / mt_reader_read. */
mt_status mt_file_read_all(const char *path, char **data, size_t *len);

/* ---- atomic writer --------------------------------------------------------------------------- */

typedef struct mt_writer mt_writer;

typedef struct mt_writer_options {
    int compress;   /* -1: by the path (.zst compresses; default), 0: never, 1: always */
    int zstd_level; /* 0: libzstd's default level (3) */
    unsigned mode;  /* permission bits of the final file before the umask; 0 means 0666 */
} mt_writer_options;

/* Starts writing path: the bytes go to a temporary file "path.tmp.XXXXXX" in the same directory,
 * which mt_writer_commit renames over path. opt may be NULL. MT_ERR_IO, MT_ERR_NOMEM. */
mt_status mt_writer_open(const char *path, const mt_writer_options *opt, mt_writer **out);
/* The same for the file `name` (one component, no '/') of the directory dirfd (AT_FDCWD: name may be
 * a path, as mt_writer_open). Neither the temporary file nor the final name is ever followed if it
 * is a symbolic link: a link at the final name is replaced by the file. */
mt_status mt_writer_openat(int dirfd, const char *name, const mt_writer_options *opt, mt_writer **out);
mt_status mt_writer_write(mt_writer *w, const void *data, size_t len);
/* Finishes the zstd frame, flushes, fsyncs the file, renames it over the final path and fsyncs the
 * directory, so after MT_OK the new content survives a crash. Frees w whatever the outcome; on
 * failure the temporary file is removed and path is left as it was. */
mt_status mt_writer_commit(mt_writer *w);
/* Drops the temporary file; path is left as it was. Frees w. NULL is a no-op. */
void mt_writer_abort(mt_writer *w);

/* The whole of data written to path atomically (compressed when path ends in .zst). */
mt_status mt_file_write_atomic(const char *path, const void *data, size_t len);
mt_status mt_file_write_atomic_at(int dirfd, const char *name, const void *data, size_t len);

/* ---- SHA-256 --------------------------------------------------------------------------------- */

#define MT_SHA256_LEN 32
#define MT_SHA256_HEX_LEN 65 /* 64 hex digits and a NUL */

typedef struct mt_sha256_ctx mt_sha256_ctx;

mt_status mt_sha256_init(mt_sha256_ctx **out);
mt_status mt_sha256_update(mt_sha256_ctx *c, const void *data, size_t len);
/* Writes the digest and frees c (also on failure). */
mt_status mt_sha256_final(mt_sha256_ctx *c, uint8_t digest[MT_SHA256_LEN]);
void mt_sha256_free(mt_sha256_ctx *c);
/* One-shot digest of a buffer. */
mt_status mt_sha256(const void *data, size_t len, uint8_t digest[MT_SHA256_LEN]);
/* Digest of a file's bytes as stored on disk (not decompressed). */
mt_status mt_sha256_file(const char *path, uint8_t digest[MT_SHA256_LEN]);
/* Lower-case hex of a digest into hex (MT_SHA256_HEX_LEN bytes). Returns hex. */
char *mt_sha256_hex(const uint8_t digest[MT_SHA256_LEN], char hex[MT_SHA256_HEX_LEN]);

#endif
