/*
 * safetensors.h — reading and writing safetensors files: an 8-byte little-endian header length, a
 * JSON header (tensor name -> dtype, shape, data_offsets; "__metadata__" -> string map), then the raw
 * little-endian tensor bytes. The model and checkpoint files (format/modelfile.h) are safetensors
 * files, so the Python `safetensors` package opens them.
 *
 * The writer can put the SHA-256 of the payload (every tensor's bytes, in file order) into the
 * metadata ("sha256"), and the reader verifies it: a flipped bit in a weight is MT_ERR_CHECKSUM, not a
 * silently different model. Files are written atomically through io/ (temporary file, fsync,
 * rename), zstd-compressed when the path ends in ".zst", and read back the same way.
 */
#ifndef MT_FORMAT_SAFETENSORS_H
#define MT_FORMAT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "microtensor.h"

typedef struct mt_st_tensor {
    const char *name;
    mt_dtype dtype;
    int ndim;
    int64_t shape[MT_MAX_DIMS];
    const void *data; /* host bytes: given to the writer, pointing into the file buffer when read */
    size_t bytes;
} mt_st_tensor;

typedef struct mt_st_meta {
    const char *key;
    const char *value;
} mt_st_meta;

/* Writes the tensors (in the given order) and metadata to path atomically. with_sha256 adds the
 * payload's SHA-256 as metadata "sha256". MT_ERR_INVALID_ARG (bad entry), MT_ERR_IO, MT_ERR_NOMEM. */
mt_status mt_st_write(const char *path, const mt_st_tensor *tensors, int n, const mt_st_meta *meta, int n_meta,
                      int with_sha256);
/* The same for the file `name` of the directory dirfd (mt_writer_openat: links never followed). */
mt_status mt_st_write_at(int dirfd, const char *name, const mt_st_tensor *tensors, int n, const mt_st_meta *meta,
                         int n_meta, int with_sha256);

typedef struct mt_st_file mt_st_file;

/* Reads and parses path (.zst decompressed). MT_ERR_NOT_FOUND, MT_ERR_IO, MT_ERR_FORMAT: "truncated"
 * (shorter than its header or its tensors say), "not a safetensors file (wrong magic)" (no JSON
 * header where one must be), a malformed header or tensor entry (named). */
mt_status mt_st_read(const char *path, mt_st_file **out);
/* Parses a file image; takes ownership of buf (allocated with mt_sys_malloc) even on failure. where
 * names the source in messages. */
mt_status mt_st_parse(char *buf, size_t len, const char *where, mt_st_file **out);
void mt_st_free(mt_st_file *f);

int mt_st_count(const mt_st_file *f);
const mt_st_tensor *mt_st_get(const mt_st_file *f, int i);
/* The tensor of that name, NULL when absent. */
const mt_st_tensor *mt_st_find(const mt_st_file *f, const char *name);
/* A metadata value, NULL when absent. */
const char *mt_st_meta_get(const mt_st_file *f, const char *key);
const char *mt_st_where(const mt_st_file *f);
/* Checks the payload against metadata "sha256": MT_OK, MT_ERR_CHECKSUM (mismatch), MT_ERR_FORMAT (no
 * sha256 in the metadata). */
mt_status mt_st_verify_sha256(const mt_st_file *f);

/* "F32", "I32", ... and back (-1 when unknown). */
const char *mt_st_dtype_name(mt_dtype dt);
int mt_st_dtype_parse(const char *s);

#endif
