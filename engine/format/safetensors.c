/*
 * safetensors.c — the safetensors container (see safetensors.h): header building and parsing with
 * jansson, payload hashing, atomic writes and .zst through io/.
 */
#include "format/safetensors.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/tensor.h"
#include "io/io.h"

/* A header larger than this is not a header: the first 8 bytes were not a safetensors length. */
#define ST_MAX_HEADER ((uint64_t)100 << 20)

struct mt_st_file {
    char *buf;          /* the whole file image */
    size_t len;
    const char *payload;/* buf + 8 + header length */
    size_t payload_len;
    json_t *header;
    json_t *meta;       /* borrowed from header, may be NULL */
    int n;
    mt_st_tensor *t;
    char where[512];
};

static const char *const dtype_names[] = {"F32", "BF16", "F16", "I32", "I8"};

const char *mt_st_dtype_name(mt_dtype dt) {
    return (unsigned)dt < sizeof dtype_names / sizeof dtype_names[0] ? dtype_names[dt] : "?";
}

int mt_st_dtype_parse(const char *s) {
    for (int i = 0; i < (int)(sizeof dtype_names / sizeof dtype_names[0]); i++)
        if (strcmp(dtype_names[i], s) == 0) return i;
    return -1;
}

/* ---- writing ------------------------------------------------------------------------------------- */

static mt_status build_header(const mt_st_tensor *t, int n, const mt_st_meta *meta, int n_meta, const char *sha_hex,
                              char **out, size_t *out_len) {
    json_t *h = json_object();
    if (!h) return mt_error(MT_ERR_NOMEM, "safetensors: out of memory");
    mt_status st = MT_OK;
    if (n_meta > 0 || sha_hex) {
        json_t *m = json_object();
        for (int i = 0; m && i < n_meta; i++) json_object_set_new(m, meta[i].key, json_string(meta[i].value));
        if (m && sha_hex) json_object_set_new(m, "sha256", json_string(sha_hex));
        if (!m || json_object_set_new(h, "__metadata__", m) != 0) st = mt_error(MT_ERR_NOMEM, "safetensors: out of memory");
    }
    uint64_t off = 0;
    for (int i = 0; st == MT_OK && i < n; i++) {
        json_t *e = json_object(), *shape = json_array(), *offs = json_array();
        if (!e || !shape || !offs) {
            json_decref(e);
            json_decref(shape);
            json_decref(offs);
            st = mt_error(MT_ERR_NOMEM, "safetensors: out of memory");
            break;
        }
        for (int d = 0; d < t[i].ndim; d++) json_array_append_new(shape, json_integer(t[i].shape[d]));
        json_array_append_new(offs, json_integer((json_int_t)off));
        json_array_append_new(offs, json_integer((json_int_t)(off + t[i].bytes)));
        off += t[i].bytes;
        json_object_set_new(e, "dtype", json_string(mt_st_dtype_name(t[i].dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", offs);
        if (json_object_set_new(h, t[i].name, e) != 0) st = mt_error(MT_ERR_NOMEM, "safetensors: out of memory");
    }
    if (st == MT_OK) {
        /* Insertion order keeps the tensors in payload order, as the safetensors package writes them. */
        char *s = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!s) {
            st = mt_error(MT_ERR_NOMEM, "safetensors: out of memory");
        } else {
            /* Pad with spaces so the payload starts 8-byte aligned (as the reference writer does). */
            size_t len = strlen(s), padded = (len + 7) & ~(size_t)7;
            *out = mt_sys_malloc(padded + 1);
            if (!*out) {
                st = mt_error(MT_ERR_NOMEM, "safetensors: out of memory");
            } else {
                memcpy(*out, s, len);
                memset(*out + len, ' ', padded - len);
                (*out)[padded] = 0;
                *out_len = padded;
            }
            free(s);
        }
    }
    json_decref(h);
    return st;
}

static mt_status check_entries(const mt_st_tensor *t, int n) {
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= t[i].shape[d];
        if (!t[i].name || !t[i].name[0] || strcmp(t[i].name, "__metadata__") == 0 || t[i].ndim < 0 ||
            t[i].ndim > MT_MAX_DIMS || mt_dtype_size(t[i].dtype) == 0 ||
            (size_t)numel * mt_dtype_size(t[i].dtype) != t[i].bytes || (!t[i].data && t[i].bytes))
            return mt_error(MT_ERR_INVALID_ARG, "safetensors: tensor entry %d ('%s') is inconsistent", i,
                            t[i].name ? t[i].name : "(null)");
    }
    return MT_OK;
}

static mt_status payload_sha(const mt_st_tensor *t, int n, char hex[MT_SHA256_HEX_LEN]) {
    mt_sha256_ctx *c;
    MT_TRY(mt_sha256_init(&c));
    for (int i = 0; i < n; i++) {
        mt_status st = mt_sha256_update(c, t[i].data, t[i].bytes);
        if (st != MT_OK) {
            mt_sha256_free(c);
            return st;
        }
    }
    uint8_t dig[MT_SHA256_LEN];
    MT_TRY(mt_sha256_final(c, dig));
    mt_sha256_hex(dig, hex);
    return MT_OK;
}

static void put_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

mt_status mt_st_write(const char *path, const mt_st_tensor *t, int n, const mt_st_meta *meta, int n_meta,
                      int with_sha256) {
    return mt_st_write_at(AT_FDCWD, path, t, n, meta, n_meta, with_sha256);
}

mt_status mt_st_write_at(int dirfd, const char *path, const mt_st_tensor *t, int n, const mt_st_meta *meta, int n_meta,
                         int with_sha256) {
    if (!path || (n && !t) || (n_meta && !meta)) return mt_error(MT_ERR_INVALID_ARG, "safetensors: NULL argument");
    MT_TRY(check_entries(t, n));
    char hex[MT_SHA256_HEX_LEN];
    if (with_sha256) MT_TRY(payload_sha(t, n, hex));
    char *header = NULL;
    size_t hlen = 0;
    MT_TRY(build_header(t, n, meta, n_meta, with_sha256 ? hex : NULL, &header, &hlen));
    mt_writer *w;
    mt_status st = mt_writer_openat(dirfd, path, NULL, &w);
    if (st != MT_OK) {
        mt_sys_free(header);
        return st;
    }
    unsigned char len8[8];
    put_le64(len8, hlen);
    st = mt_writer_write(w, len8, 8);
    if (st == MT_OK) st = mt_writer_write(w, header, hlen);
    for (int i = 0; st == MT_OK && i < n; i++)
        if (t[i].bytes) st = mt_writer_write(w, t[i].data, t[i].bytes);
    mt_sys_free(header);
    if (st != MT_OK) {
        mt_writer_abort(w);
        return st;
    }
    return mt_writer_commit(w);
}

/* ---- reading ------------------------------------------------------------------------------------- */

void mt_st_free(mt_st_file *f) {
    if (!f) return;
    json_decref(f->header);
    mt_sys_free(f->t);
    mt_sys_free(f->buf);
    mt_sys_free(f);
}

static mt_status parse_entry(mt_st_file *f, const char *name, json_t *e, mt_st_tensor *out) {
    const char *w = f->where;
    if (!json_is_object(e)) return mt_error(MT_ERR_FORMAT, "%s: header entry '%s' is not an object", w, name);
    json_t *dt = json_object_get(e, "dtype"), *shape = json_object_get(e, "shape"), *offs = json_object_get(e, "data_offsets");
    if (!json_is_string(dt) || !json_is_array(shape) || !json_is_array(offs) || json_array_size(offs) != 2)
        return mt_error(MT_ERR_FORMAT, "%s: tensor '%s' needs dtype, shape and data_offsets [begin, end]", w, name);
    int d = mt_st_dtype_parse(json_string_value(dt));
    if (d < 0)
        return mt_error(MT_ERR_FORMAT, "%s: tensor '%s' has dtype '%s', which this engine does not read", w, name,
                        json_string_value(dt));
    if (json_array_size(shape) > MT_MAX_DIMS)
        return mt_error(MT_ERR_FORMAT, "%s: tensor '%s' has %zu dims (at most %d)", w, name, json_array_size(shape),
                        MT_MAX_DIMS);
    memset(out, 0, sizeof *out);
    out->name = name;
    out->dtype = (mt_dtype)d;
    out->ndim = (int)json_array_size(shape);
    uint64_t numel = 1;
    for (int i = 0; i < out->ndim; i++) {
        json_t *v = json_array_get(shape, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > ((json_int_t)1 << 40))
            return mt_error(MT_ERR_FORMAT, "%s: tensor '%s': bad shape entry %d", w, name, i);
        out->shape[i] = (int64_t)json_integer_value(v);
        numel *= (uint64_t)out->shape[i];
        if (numel > ((uint64_t)1 << 40)) return mt_error(MT_ERR_FORMAT, "%s: tensor '%s': shape too large", w, name);
    }
    json_t *b = json_array_get(offs, 0), *en = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 ||
        json_integer_value(en) < json_integer_value(b))
        return mt_error(MT_ERR_FORMAT, "%s: tensor '%s': bad data_offsets", w, name);
    uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(en);
    if (end - begin != numel * mt_dtype_size(out->dtype))
        return mt_error(MT_ERR_FORMAT, "%s: tensor '%s': data_offsets span %llu bytes, its shape needs %llu", w, name,
                        (unsigned long long)(end - begin), (unsigned long long)(numel * mt_dtype_size(out->dtype)));
    if (end > f->payload_len)
        return mt_error(MT_ERR_FORMAT, "%s: truncated: tensor '%s' needs payload bytes [%llu, %llu), the file has %zu",
                        w, name, (unsigned long long)begin, (unsigned long long)end, f->payload_len);
    out->data = f->payload + begin;
    out->bytes = (size_t)(end - begin);
    return MT_OK;
}

mt_status mt_st_parse(char *buf, size_t len, const char *where, mt_st_file **out) {
    mt_st_file *f = mt_sys_calloc(1, sizeof *f);
    if (!f) {
        mt_sys_free(buf);
        return mt_error(MT_ERR_NOMEM, "%s: out of memory", where);
    }
    f->buf = buf;
    f->len = len;
    snprintf(f->where, sizeof f->where, "%s", where ? where : "safetensors");
    const char *w = f->where;
    mt_status st = MT_OK;
    uint64_t hlen = 0;
    for (int i = 0; i < 8 && (size_t)i < len; i++) hlen |= (uint64_t)(unsigned char)buf[i] << (8 * i);
    if (len < 8) {
        st = mt_error(MT_ERR_FORMAT, "%s: truncated: %zu bytes, shorter than the 8-byte header length", w, len);
    } else if (hlen == 0 || hlen > ST_MAX_HEADER || (len > 8 && buf[8] != '{')) {
        st = mt_error(MT_ERR_FORMAT, "%s: not a safetensors model file (wrong magic: no JSON header after the length)", w);
    } else if (len < 8 + hlen) {
        st = mt_error(MT_ERR_FORMAT, "%s: truncated: the header says %llu bytes, the file has %zu after the length", w,
                      (unsigned long long)hlen, len - 8);
    }
    if (st == MT_OK) {
        json_error_t err;
        f->header = json_loadb(buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &err);
        if (!f->header || !json_is_object(f->header))
            st = mt_error(MT_ERR_FORMAT, "%s: the JSON header does not parse (column %d: %s)", w, err.column,
                          f->header ? "not an object" : err.text);
    }
    if (st == MT_OK) {
        f->payload = buf + 8 + hlen;
        f->payload_len = len - 8 - (size_t)hlen;
        f->meta = json_object_get(f->header, "__metadata__");
        if (f->meta && !json_is_object(f->meta)) st = mt_error(MT_ERR_FORMAT, "%s: __metadata__ is not an object", w);
        const char *k;
        json_t *v;
        if (f->meta)
            json_object_foreach(f->meta, k, v) if (st == MT_OK && !json_is_string(v)) st =
                mt_error(MT_ERR_FORMAT, "%s: __metadata__.%s is not a string", w, k);
    }
    if (st == MT_OK) {
        size_t n = json_object_size(f->header) - (f->meta ? 1 : 0);
        f->t = mt_sys_calloc(n ? n : 1, sizeof *f->t);
        if (!f->t) st = mt_error(MT_ERR_NOMEM, "%s: out of memory", w);
        const char *k;
        json_t *v;
        json_object_foreach(f->header, k, v) {
            if (st != MT_OK) break;
            if (strcmp(k, "__metadata__") == 0) continue;
            st = parse_entry(f, k, v, &f->t[f->n]);
            if (st == MT_OK) f->n++;
        }
    }
    if (st != MT_OK) {
        mt_st_free(f);
        return st;
    }
    *out = f;
    return MT_OK;
}

mt_status mt_st_read(const char *path, mt_st_file **out) {
    if (!path || !out) return mt_error(MT_ERR_INVALID_ARG, "safetensors: NULL argument");
    /* A model is a regular file: a FIFO or a device would block the reader or never end. */
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        return mt_error(MT_ERR_INVALID_ARG, "%s: not a regular file", path);
    char *buf;
    size_t len;
    MT_TRY(mt_file_read_all(path, &buf, &len));
    return mt_st_parse(buf, len, path, out);
}

int mt_st_count(const mt_st_file *f) { return f->n; }
const mt_st_tensor *mt_st_get(const mt_st_file *f, int i) { return i >= 0 && i < f->n ? &f->t[i] : NULL; }
const char *mt_st_where(const mt_st_file *f) { return f->where; }

const mt_st_tensor *mt_st_find(const mt_st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

const char *mt_st_meta_get(const mt_st_file *f, const char *key) {
    json_t *v = f->meta ? json_object_get(f->meta, key) : NULL;
    return v ? json_string_value(v) : NULL;
}

mt_status mt_st_verify_sha256(const mt_st_file *f) {
    const char *want = mt_st_meta_get(f, "sha256");
    if (!want) return mt_error(MT_ERR_FORMAT, "%s: no __metadata__.sha256 to check the payload against", f->where);
    /* The payload is every tensor's bytes in offset order; hash the region they cover. */
    uint64_t end = 0;
    for (int i = 0; i < f->n; i++) {
        uint64_t e = (uint64_t)((const char *)f->t[i].data - f->payload) + f->t[i].bytes;
        if (e > end) end = e;
    }
    uint8_t dig[MT_SHA256_LEN];
    char hex[MT_SHA256_HEX_LEN];
    MT_TRY(mt_sha256(f->payload, (size_t)end, dig));
    mt_sha256_hex(dig, hex);
    if (strcmp(hex, want) != 0)
        return mt_error(MT_ERR_CHECKSUM, "%s: checksum mismatch: the payload's SHA-256 is %.16s..., the metadata says "
                        "%.16s...", f->where, hex, want);
    return MT_OK;
}
