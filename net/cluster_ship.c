/*
 * cluster_ship.c — files between the nodes of a cluster: the coordinator sends the corpora, the
 * tokenizer and the checkpoint a job reads to the worker nodes that lack them (by SHA-256 under their
 * own --data-root).
 *
 * Flow control is by window: the worker asks (ClusterFetch) for at most MT_CLUSTER_WINDOW_BYTES from
 * an offset; the coordinator answers with CheckpointChunk frames of MT_CLUSTER_CHUNK_BYTES raw bytes,
 * each one zstd frame with a content checksum; the worker asks for the next window when half of the
 * last one is in, so neither side holds more than two windows. The level is 1, or -1 for a window
 * whose first chunk level 1 barely compresses (model weights), which costs a quarter of the time.
 * The worker writes `.NAME.SHA16.part` beside the final name, so a broken link resumes from the bytes
 * already written (the part's length); a chunk that does not decompress to its announced size with a
 * good checksum is asked for again; the SHA-256 of the bytes written, summed as they arrive, must
 * equal the coordinator's before the part is renamed into place (three failed verifications fail the
 * fetch). Names are relative and are walked component by component beneath the data root with
 * O_NOFOLLOW, so no name and no symbolic link can lead outside it.
 *
 * Test hooks (environment of the coordinator, for tests/dist/test_cluster_ship.sh):
 * MT_TEST_CORRUPT_CHUNK=N flips a byte of the N-th chunk this process sends; MT_TEST_CUT_AFTER_CHUNKS=N
 * closes the link after the N-th chunk. Each fires once.
 */
#include "cluster.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zstd.h>

#include "log.h"

/* ---- names and paths ---- */

bool mt_ship_name_ok(const char *name, const char **why) {
    size_t n = name ? strlen(name) : 0;
    if (n == 0) return *why = "empty name", false;
    if (n > MT_CLUSTER_NAME_MAX) return *why = "name too long", false;
    if (name[0] == '/') return *why = "an absolute path", false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return *why = "a control character in the name", false;
    const char *p = name;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) return *why = "an empty path component", false;
        if ((len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return *why = "a '.' or '..' component", false;
        if (!e) break;
        p = e + 1;
        if (!*p) return *why = "a trailing '/'", false;
    }
    return true;
}

/* Opens the directory holding name's last component beneath root (creating the missing ones when
 * create), never through a link; *base points at the last component. Returns a descriptor or -1. */
static int open_parent(const char *root, const char *name, bool create, const char **base, char *msg, size_t cap) {
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(msg, cap, "data root %s: %s", root, strerror(errno));
        return -1;
    }
    char comp[MT_CLUSTER_NAME_MAX + 1];
    const char *p = name;
    for (;;) {
        const char *e = strchr(p, '/');
        if (!e) break;
        size_t len = (size_t)(e - p);
        memcpy(comp, p, len);
        comp[len] = 0;
        if (create && mkdirat(fd, comp, 0755) != 0 && errno != EEXIST) {
            snprintf(msg, cap, "%s: mkdir %s: %s", name, comp, strerror(errno));
            close(fd);
            return -1;
        }
        int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e2 = errno;
        close(fd);
        if (next < 0) {
            snprintf(msg, cap, "%s: %s: %s", name, comp,
                     e2 == ELOOP || e2 == ENOTDIR ? "a symbolic link or not a directory" : strerror(e2));
            return -1;
        }
        fd = next;
        p = e + 1;
    }
    *base = p;
    return fd;
}

/* Adds the first len bytes of fd (len UINT64_MAX: all of it) to md; *total receives the count. */
static int hash_fd(EVP_MD_CTX *md, int fd, uint64_t len, uint64_t *total, char *msg, size_t cap) {
    unsigned char *buf = malloc(1 << 20);
    if (!buf) {
        snprintf(msg, cap, "sha256: out of memory");
        return -1;
    }
    uint64_t off = 0;
    int rc = 0;
    while (off < len) {
        size_t want = len - off < (1u << 20) ? (size_t)(len - off) : (1u << 20);
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            snprintf(msg, cap, "read: %s", strerror(errno));
            rc = -1;
            break;
        }
        if (n == 0) break;
        EVP_DigestUpdate(md, buf, (size_t)n);
        off += (uint64_t)n;
    }
    free(buf);
    if (total) *total = off;
    return rc;
}

static void hex_final(EVP_MD_CTX *md, char hex[65]) {
    unsigned char d[32];
    unsigned int dl = 0;
    EVP_DigestFinal_ex(md, d, &dl);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static int sha256_fd(int fd, char hex[65], uint64_t *size, char *msg, size_t cap) {
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        snprintf(msg, cap, "sha256: out of memory");
        return -1;
    }
    int rc = hash_fd(md, fd, UINT64_MAX, size, msg, cap);
    if (rc == 0) hex_final(md, hex);
    EVP_MD_CTX_free(md);
    return rc;
}

/* Opens root/name read-only (a regular file, never through a link). Returns a descriptor or -1. */
static int open_beneath(const char *root, const char *name, char *msg, size_t cap) {
    const char *why, *base;
    if (!mt_ship_name_ok(name, &why)) {
        snprintf(msg, cap, "file name '%.200s': %s", name, why);
        return -1;
    }
    int dfd = open_parent(root, name, false, &base, msg, cap);
    if (dfd < 0) return -1;
    int fd = openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int e = errno;
    close(dfd);
    struct stat st;
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        fd = -1;
        e = EINVAL;
    }
    if (fd < 0) snprintf(msg, cap, "%s: %s", name, e == ELOOP ? "a symbolic link" : e == EINVAL ? "not a regular file" : strerror(e));
    return fd;
}

int mt_ship_file_sha256(const char *root, const char *name, char hex[65], uint64_t *size, char *msg, size_t cap) {
    int fd = open_beneath(root, name, msg, cap);
    if (fd < 0) return -1;
    int rc = sha256_fd(fd, hex, size, msg, cap);
    close(fd);
    return rc;
}

int mt_ship_relative(const char *root, const char *path, char *name, size_t cap, char *msg, size_t msgcap) {
    char joined[PATH_MAX], real[PATH_MAX];
    if (path[0] == '/') snprintf(joined, sizeof joined, "%s", path);
    else snprintf(joined, sizeof joined, "%s/%s", root, path);
    if (!realpath(joined, real)) {
        snprintf(msg, msgcap, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t rl = strlen(root);
    if (strncmp(real, root, rl) != 0 || real[rl] != '/') {
        snprintf(msg, msgcap, "%s is outside the data root %s", path, root);
        return -1;
    }
    struct stat st;
    if (stat(real, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(msg, msgcap, "%s: not a regular file", path);
        return -1;
    }
    if (strlen(real + rl + 1) >= cap) {
        snprintf(msg, msgcap, "%s: name too long", path);
        return -1;
    }
    snprintf(name, cap, "%s", real + rl + 1);
    return 0;
}

/* ---- sender (coordinator) ---- */

static long env_count(const char *var) {
    const char *v = getenv(var);
    return v && *v ? strtol(v, NULL, 10) : 0;
}

void mt_ship_send(mt_conn *c, uint64_t id, const char *root, const Mt__V1__ClusterFetch *req, const char *sha256,
                  uint64_t size) {
    static long sent_chunks;
    static bool corrupted, cut;
    char msg[600];
    if (req->offset > size) {
        mt_conn_send_error(c, id, MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT, false, 0,
                           "ClusterFetch.offset %llu is past the end of %s (%llu bytes)",
                           (unsigned long long)req->offset, req->name, (unsigned long long)size);
        return;
    }
    int fd = open_beneath(root, req->name, msg, sizeof msg);
    if (fd < 0) {
        mt_conn_send_error(c, id, MT__V1__ERROR_CODE__ERR_NOT_FOUND, false, 0, "%s", msg);
        return;
    }
    uint64_t len = req->length && req->length < MT_CLUSTER_WINDOW_BYTES ? req->length : MT_CLUSTER_WINDOW_BYTES;
    uint64_t end = req->offset + len < size ? req->offset + len : size;
    size_t bound = ZSTD_compressBound(MT_CLUSTER_CHUNK_BYTES);
    unsigned char *raw = malloc(MT_CLUSTER_CHUNK_BYTES), *z = malloc(bound);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    if (!raw || !z || !cc) {
        mt_conn_send_error(c, id, MT__V1__ERROR_CODE__ERR_INTERNAL, false, 0, "out of memory");
        goto out;
    }
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 1);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    uint64_t off = req->offset;
    do { /* an empty file is one empty chunk */
        size_t want = end - off < MT_CLUSTER_CHUNK_BYTES ? (size_t)(end - off) : MT_CLUSTER_CHUNK_BYTES;
        ssize_t n = want ? pread(fd, raw, want, (off_t)off) : 0;
        if (n < 0 || (size_t)n != want) {
            mt_conn_send_error(c, id, MT__V1__ERROR_CODE__ERR_INTERNAL, false, 0, "%s: read at %llu: %s", req->name,
                               (unsigned long long)off, n < 0 ? strerror(errno) : "the file shrank");
            goto out;
        }
        size_t zn = ZSTD_compress2(cc, z, bound, raw, want);
        /* Level 1 for what compresses (corpora: about 3x); a window whose first chunk it saves less
         * than 15 % of (weights and moments: 7 %) goes on at level -1, four times faster. */
        if (off == req->offset && !ZSTD_isError(zn) && zn > want * 85 / 100)
            ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, -1);
        if (ZSTD_isError(zn)) {
            mt_conn_send_error(c, id, MT__V1__ERROR_CODE__ERR_INTERNAL, false, 0, "zstd: %s", ZSTD_getErrorName(zn));
            goto out;
        }
        sent_chunks++;
        if (!corrupted && sent_chunks == env_count("MT_TEST_CORRUPT_CHUNK")) {
            z[zn / 2] ^= 0x5a;
            corrupted = true;
            MT_LOGW("test hook: chunk %ld (%s at %llu) corrupted on the wire", sent_chunks, req->name,
                    (unsigned long long)off);
        }
        Mt__V1__CheckpointChunk ch = MT__V1__CHECKPOINT_CHUNK__INIT;
        ch.name = req->name;
        ch.offset = off;
        ch.total_size = size;
        ch.data.data = z;
        ch.data.len = zn;
        ch.sha256 = (char *)sha256;
        ch.raw_size = want;
        ch.last = off + want == size;
        mt_frame f = MT__V1__FRAME__INIT;
        f.id = id;
        f.body_case = MT__V1__FRAME__BODY_CHECKPOINT_CHUNK;
        f.checkpoint_chunk = &ch;
        mt_conn_send(c, &f);
        off += want;
        if (!cut && sent_chunks == env_count("MT_TEST_CUT_AFTER_CHUNKS")) {
            cut = true;
            MT_LOGW("test hook: link to %s cut after chunk %ld", c->peer, sent_chunks);
            mt_conn_close_after_flush(c);
            break;
        }
    } while (off < end);
out:
    ZSTD_freeCCtx(cc);
    free(raw);
    free(z);
    close(fd);
}

/* ---- receiver (worker) ---- */

void mt_ship_rx_close(mt_ship_rx *rx) {
    EVP_MD_CTX_free(rx->md);
    rx->md = NULL;
    if (rx->fd >= 0) close(rx->fd);
    if (rx->dir_fd >= 0) close(rx->dir_fd);
    rx->fd = rx->dir_fd = -1;
}

/* Asks for a window from off (the end of the file caps it). */
static int ask(mt_ship_rx *rx, uint64_t off) {
    rx->ask_off = off;
    rx->ask_len = off + MT_CLUSTER_WINDOW_BYTES < rx->size ? MT_CLUSTER_WINDOW_BYTES : rx->size - off;
    rx->asked_end = off + rx->ask_len;
    return MT_SHIP_ASK;
}

/* The part is whole: verify (the SHA-256 of what was written, summed as it was), rename into place. */
static int finish(mt_ship_rx *rx, const char *base, char *msg, size_t cap) {
    char hex[65];
    if (fsync(rx->fd) != 0) {
        snprintf(msg, cap, "%s: fsync: %s", rx->name, strerror(errno));
        return MT_SHIP_FAILED;
    }
    hex_final(rx->md, hex);
    EVP_DigestInit_ex(rx->md, EVP_sha256(), NULL);
    if (strcmp(hex, rx->sha256) != 0) {
        rx->attempts++;
        MT_LOGW("cluster: %s: sha256 %.16s... after the transfer, want %.16s... (attempt %d of 3)", rx->name, hex,
                rx->sha256, rx->attempts);
        if (rx->attempts >= 3 || ftruncate(rx->fd, 0) != 0) {
            snprintf(msg, cap, "%s: the received file's sha256 differs from the coordinator's %d times", rx->name,
                     rx->attempts);
            return MT_SHIP_FAILED;
        }
        rx->offset = 0;
        return ask(rx, 0);
    }
    if (renameat(rx->dir_fd, rx->part, rx->dir_fd, base) != 0 || fsync(rx->dir_fd) != 0) {
        snprintf(msg, cap, "%s: rename into place: %s", rx->name, strerror(errno));
        return MT_SHIP_FAILED;
    }
    mt_ship_rx_close(rx);
    return MT_SHIP_DONE;
}

static const char *base_of(const char *name) {
    const char *b = strrchr(name, '/');
    return b ? b + 1 : name;
}

int mt_ship_rx_begin(mt_ship_rx *rx, const char *root, const char *name, const char *sha256, uint64_t size, char *msg,
                     size_t cap) {
    memset(rx, 0, sizeof *rx);
    rx->fd = rx->dir_fd = -1;
    const char *why, *base;
    if (!mt_ship_name_ok(name, &why)) {
        snprintf(msg, cap, "file name '%.200s' refused: %s", name, why);
        return MT_SHIP_FAILED;
    }
    if (!sha256 || strlen(sha256) != 64) {
        snprintf(msg, cap, "%s: no sha256", name);
        return MT_SHIP_FAILED;
    }
    snprintf(rx->name, sizeof rx->name, "%s", name);
    snprintf(rx->sha256, sizeof rx->sha256, "%s", sha256);
    rx->size = size;
    char hex[65], ignore[64];
    if (mt_ship_file_sha256(root, name, hex, NULL, ignore, sizeof ignore) == 0 && strcmp(hex, sha256) == 0)
        return MT_SHIP_DONE; /* already here */
    rx->dir_fd = open_parent(root, name, true, &base, msg, cap);
    if (rx->dir_fd < 0) return MT_SHIP_FAILED;
    snprintf(rx->part, sizeof rx->part, ".%s.%.16s.part", base, sha256);
    rx->fd = openat(rx->dir_fd, rx->part, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    struct stat st;
    if (rx->fd < 0 || fstat(rx->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(msg, cap, "%s: cannot open %s: %s", name, rx->part, rx->fd < 0 ? strerror(errno) : "not a regular file");
        mt_ship_rx_close(rx);
        return MT_SHIP_FAILED;
    }
    rx->offset = (uint64_t)st.st_size <= size ? (uint64_t)st.st_size : 0;
    if ((uint64_t)st.st_size > size && ftruncate(rx->fd, 0) != 0) {
        snprintf(msg, cap, "%s: truncate: %s", rx->part, strerror(errno));
        mt_ship_rx_close(rx);
        return MT_SHIP_FAILED;
    }
    rx->md = EVP_MD_CTX_new();
    if (!rx->md || EVP_DigestInit_ex(rx->md, EVP_sha256(), NULL) != 1 ||
        hash_fd(rx->md, rx->fd, rx->offset, NULL, msg, cap) != 0) { /* the part already there */
        if (!msg[0]) snprintf(msg, cap, "sha256: out of memory");
        mt_ship_rx_close(rx);
        return MT_SHIP_FAILED;
    }
    if (rx->offset) MT_LOGI("cluster: %s: resuming at byte %llu of %llu", name, (unsigned long long)rx->offset,
                            (unsigned long long)size);
    if (rx->offset == size && size > 0) {
        int r = finish(rx, base, msg, cap);
        if (r != MT_SHIP_ASK) return r;
    }
    return ask(rx, rx->offset);
}

int mt_ship_rx_chunk(mt_ship_rx *rx, const Mt__V1__CheckpointChunk *ch, char *msg, size_t cap) {
    if (rx->fd < 0 || strcmp(ch->name, rx->name) != 0 || ch->offset != rx->offset) return MT_SHIP_MORE; /* stale */
    if (strcmp(ch->sha256, rx->sha256) != 0 || ch->total_size != rx->size) {
        snprintf(msg, cap, "%s changed on the coordinator during the transfer", rx->name);
        return MT_SHIP_FAILED;
    }
    if (ch->raw_size > MT_CLUSTER_CHUNK_BYTES || ch->offset + ch->raw_size > rx->size) {
        snprintf(msg, cap, "%s: chunk at %llu announces %llu bytes (CheckpointChunk.raw_size out of range)", rx->name,
                 (unsigned long long)ch->offset, (unsigned long long)ch->raw_size);
        return MT_SHIP_FAILED;
    }
    void *raw = malloc(ch->raw_size ? ch->raw_size : 1);
    if (!raw) {
        snprintf(msg, cap, "out of memory");
        return MT_SHIP_FAILED;
    }
    size_t n = ZSTD_decompress(raw, ch->raw_size, ch->data.data, ch->data.len);
    if (ZSTD_isError(n) || n != ch->raw_size) {
        free(raw);
        rx->corrupt++;
        MT_LOGW("cluster: %s: chunk at byte %llu is corrupt (%s); asking for it again", rx->name,
                (unsigned long long)ch->offset, ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong size");
        return ask(rx, rx->offset); /* chunks already on their way are stale now: dropped */
    }
    ssize_t w = n ? pwrite(rx->fd, raw, n, (off_t)rx->offset) : 0;
    if (w > 0) EVP_DigestUpdate(rx->md, raw, (size_t)w);
    free(raw);
    if (w < 0 || (size_t)w != n) {
        snprintf(msg, cap, "%s: write: %s", rx->part, w < 0 ? strerror(errno) : "short write");
        return MT_SHIP_FAILED;
    }
    rx->offset += n;
    rx->received++;
    rx->wire += ch->data.len;
    if (rx->offset == rx->size) return finish(rx, base_of(rx->name), msg, cap);
    if (rx->asked_end < rx->size && rx->asked_end - rx->offset <= MT_CLUSTER_WINDOW_BYTES / 2)
        return ask(rx, rx->asked_end);
    return MT_SHIP_MORE;
}
