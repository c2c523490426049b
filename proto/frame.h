/*
 * frame.h — the wire framing of proto/README.md, independent of any I/O library: a 4-byte big-endian
 * length, then one mt.v1.Frame. The stream decoder (mt_framer) checks each length against the limit
 * before a byte of the body is buffered, skips an oversized-but-framed body without losing sync, and
 * turns bad input into a protocol violation. mt_frame_check_* validate a decoded request against the
 * limits. The server, the clients and the fuzz target all use this file.
 */
#ifndef MT_PROTO_FRAME_H
#define MT_PROTO_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "microtensor.pb-c.h"

#define MT_FRAME_HEADER_BYTES 4
#define MT_PROTOCOL_VERSION 1
/* The largest beam_size of a TranslateRequest: the engine's (MT_TRANSLATE_MAX_BEAM of
 * abi/microtensor.h; net/translate.c checks at compile time that they agree). */
#define MT_PROTOCOL_MAX_BEAM 64
/* A body prefix long enough to hold field 1 (the id): one tag byte and a 10-byte varint. */
#define MT_FRAME_ID_PREFIX 11

typedef Mt__V1__Frame mt_frame;

static inline uint32_t mt_frame_get_len(const uint8_t h[4]) {
    return ((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | (uint32_t)h[3];
}
static inline void mt_frame_put_len(uint8_t h[4], uint32_t n) {
    h[0] = (uint8_t)(n >> 24);
    h[1] = (uint8_t)(n >> 16);
    h[2] = (uint8_t)(n >> 8);
    h[3] = (uint8_t)n;
}

/* Serializes f with its length prefix into a malloc'd buffer (*len bytes). NULL when out of memory
 * or the frame exceeds 4 GiB - 1. */
uint8_t *mt_frame_encode(const mt_frame *f, size_t *len);

/* Decodes one body. Returns 0 and *out (free with mt_frame_free), or an Mt__V1__ErrorCode
 * (ERR_BAD_FRAME: not a Frame; ERR_UNKNOWN_BODY: a body field this build does not know) and *why. */
int mt_frame_decode(const uint8_t *body, size_t n, mt_frame **out, const char **why);
void mt_frame_free(mt_frame *f);

/* The id (field 1) at the start of a body prefix, when the encoder wrote it first (every encoder we
 * know does). Returns 1 and *id, or 0. */
int mt_frame_peek_id(const uint8_t *p, size_t n, uint64_t *id);

/* ---- stream decoder ---- */

typedef enum mt_fr_kind {
    MT_FR_NEED = 0,      /* more bytes are needed: call again with at least mt_framer_need() bytes */
    MT_FR_CONTINUE,      /* progress made, nothing to report: call again */
    MT_FR_FRAME,         /* ev.frame decoded (the caller owns it) */
    MT_FR_OVERSIZE,      /* a frame over max_frame: answer ERR_FRAME_TOO_LARGE (ev.id); its body is skipped */
    MT_FR_VIOLATION      /* protocol violation ev.code/ev.why: answer and close; the framer is dead */
} mt_fr_kind;

typedef struct mt_fr_event {
    mt_fr_kind kind;
    mt_frame *frame;
    uint64_t id;         /* OVERSIZE: the frame's id if it could be read, else 0 */
    uint64_t length;     /* OVERSIZE/VIOLATION: the announced length */
    int code;            /* VIOLATION: Mt__V1__ErrorCode */
    const char *why;
} mt_fr_event;

typedef struct mt_framer {
    int state;
    uint64_t body_len;     /* BODY/PEEK: announced length */
    uint64_t discard_left; /* DISCARD: bytes still to skip */
    uint64_t max_frame;    /* frames longer are oversized */
    uint64_t max_discard;  /* oversized frames up to this are skipped; longer (or when 0) are violations */
    uint64_t frames, skipped_bytes;
} mt_framer;

void mt_framer_init(mt_framer *fr, uint64_t max_frame, uint64_t max_discard);
void mt_framer_set_limits(mt_framer *fr, uint64_t max_frame, uint64_t max_discard);
/* Contiguous bytes the next mt_framer_feed wants (4 for a header, the body length, the id prefix);
 * while skipping, 1 (any amount helps). */
size_t mt_framer_need(const mt_framer *fr);
bool mt_framer_skipping(const mt_framer *fr);
/* Consumes a prefix of data[0..avail) and reports one event; returns the bytes consumed (the caller
 * drops them from its buffer). While skipping, data may be NULL: the bytes are not read. */
size_t mt_framer_feed(mt_framer *fr, const uint8_t *data, size_t avail, mt_fr_event *ev);

/* ---- request validation (pure; the dispatcher and the fuzz target use it) ---- */

typedef struct mt_check_limits {
    uint32_t max_sentences;
    uint32_t max_chars;
} mt_check_limits;

/* Bodies a client may send; anything else (a server-only body) is ERR_BAD_FRAME. */
bool mt_frame_client_body(int body_case);

/* The protocol checks every request frame passes (id != 0, a client body). Returns 0 or an error
 * code with *why; every failure here is a violation (fatal). */
int mt_frame_check_envelope(const mt_frame *f, const char **why);

/* Checks a TranslateRequest: sentence count and length, UTF-8, decoding options in range.
 * Returns 0, or an Mt__V1__ErrorCode with a message in msg (never fatal). */
int mt_frame_check_translate(const Mt__V1__TranslateRequest *t, const mt_check_limits *lim, char *msg,
                             size_t msglen);

/* Code points of a NUL-terminated UTF-8 string, stopping early past max; -1 when it is not valid
 * UTF-8 (overlongs, surrogates and code points above U+10FFFF are invalid). */
long mt_utf8_count(const char *s, long max);

const char *mt_error_code_name(int code);

#endif
