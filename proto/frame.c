/*
 * frame.c — length-prefixed mt.v1.Frame encoding and the stream decoder (see frame.h).
 *
 * The framer never holds bytes itself: it tells its caller how many contiguous bytes it needs and
 * consumes them from the caller's buffer, so the length is always checked before the body is
 * buffered (the server raises its read watermark only to a length it accepted).
 */
#include "frame.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_HEADER = 0, ST_BODY, ST_PEEK, ST_DISCARD, ST_DEAD };

uint8_t *mt_frame_encode(const mt_frame *f, size_t *len) {
    size_t n = mt__v1__frame__get_packed_size(f);
    if (n > UINT32_MAX) return NULL;
    uint8_t *buf = malloc(n + MT_FRAME_HEADER_BYTES);
    if (!buf) return NULL;
    mt_frame_put_len(buf, (uint32_t)n);
    size_t w = mt__v1__frame__pack(f, buf + MT_FRAME_HEADER_BYTES);
    *len = w + MT_FRAME_HEADER_BYTES;
    return buf;
}

/* protobuf-c keeps a field numbered 0 (an over-long encoded tag) as an unknown field, although no
 * valid message has one and its own packer writes it back in a form it then refuses: such a frame
 * is not a valid message, at any depth. */
static bool message_ok(const ProtobufCMessage *m, int depth) {
    if (depth > 16) return false;
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0) return false;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        if (fd->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t cnt = *(const size_t *)(base + fd->quantifier_offset);
            ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + fd->offset);
            for (size_t k = 0; k < cnt; k++)
                if (!message_ok(arr[k], depth + 1)) return false;
            continue;
        }
        if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && *(const uint32_t *)(base + fd->quantifier_offset) != fd->id)
            continue;
        const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)(base + fd->offset);
        if (sub && !message_ok(sub, depth + 1)) return false;
    }
    return true;
}

/* protobuf-c hands string fields over NUL-terminated and keeps no length, so a string holding a NUL
 * byte ("token\0junk") would silently read as its prefix. Walks the wire bytes of message d and
 * says whether any string field (at any depth) holds a NUL. Malformed input is left to the unpacker. */
static bool wire_varint(const uint8_t *p, size_t n, size_t *pos, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64 && *pos < n; shift += 7) {
        uint8_t b = p[(*pos)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

static bool string_has_nul(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t n, int depth) {
    if (depth > 16) return false;
    size_t pos = 0;
    while (pos < n) {
        uint64_t key, v;
        if (!wire_varint(p, n, &pos, &key)) return false;
        switch (key & 7) {
        case 0:
            if (!wire_varint(p, n, &pos, &v)) return false;
            break;
        case 1: pos += 8; break;
        case 5: pos += 4; break;
        case 2: {
            if (!wire_varint(p, n, &pos, &v) || v > n - pos) return false;
            const ProtobufCFieldDescriptor *fd =
                key >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3)) : NULL;
            if (fd && fd->type == PROTOBUF_C_TYPE_STRING && memchr(p + pos, 0, (size_t)v)) return true;
            if (fd && fd->type == PROTOBUF_C_TYPE_MESSAGE && string_has_nul(fd->descriptor, p + pos, (size_t)v, depth + 1))
                return true;
            pos += (size_t)v;
            break;
        }
        default: return false;
        }
    }
    return false;
}

int mt_frame_decode(const uint8_t *body, size_t n, mt_frame **out, const char **why) {
    if (string_has_nul(&mt__v1__frame__descriptor, body, n, 0)) {
        *why = "a string field of the frame holds a NUL byte";
        return MT__V1__ERROR_CODE__ERR_BAD_FRAME;
    }
    mt_frame *f = mt__v1__frame__unpack(NULL, n, body);
    if (f && !message_ok(&f->base, 0)) {
        mt__v1__frame__free_unpacked(f, NULL);
        f = NULL;
    }
    if (!f) {
        *why = "the frame body is not a valid mt.v1.Frame";
        return MT__V1__ERROR_CODE__ERR_BAD_FRAME;
    }
    if (f->body_case == MT__V1__FRAME__BODY__NOT_SET) {
        int unknown = f->base.n_unknown_fields > 0;
        mt__v1__frame__free_unpacked(f, NULL);
        *why = unknown ? "the frame's body is not one this server knows" : "the frame has no body";
        return unknown ? MT__V1__ERROR_CODE__ERR_UNKNOWN_BODY : MT__V1__ERROR_CODE__ERR_BAD_FRAME;
    }
    *out = f;
    return 0;
}

void mt_frame_free(mt_frame *f) {
    if (f) mt__v1__frame__free_unpacked(f, NULL);
}

int mt_frame_peek_id(const uint8_t *p, size_t n, uint64_t *id) {
    if (n < 2 || p[0] != 0x08) return 0; /* field 1, varint */
    uint64_t v = 0;
    for (size_t i = 1; i < n && i < MT_FRAME_ID_PREFIX; i++) {
        v |= (uint64_t)(p[i] & 0x7f) << (7 * (i - 1));
        if (!(p[i] & 0x80)) {
            *id = v;
            return 1;
        }
    }
    return 0;
}

void mt_framer_init(mt_framer *fr, uint64_t max_frame, uint64_t max_discard) {
    memset(fr, 0, sizeof *fr);
    fr->state = ST_HEADER;
    mt_framer_set_limits(fr, max_frame, max_discard);
}

void mt_framer_set_limits(mt_framer *fr, uint64_t max_frame, uint64_t max_discard) {
    fr->max_frame = max_frame;
    fr->max_discard = max_discard;
}

size_t mt_framer_need(const mt_framer *fr) {
    switch (fr->state) {
    case ST_HEADER: return MT_FRAME_HEADER_BYTES;
    case ST_BODY: return (size_t)fr->body_len;
    case ST_PEEK: return (size_t)(fr->body_len < MT_FRAME_ID_PREFIX ? fr->body_len : MT_FRAME_ID_PREFIX);
    case ST_DISCARD: return 1;
    default: return 0;
    }
}

bool mt_framer_skipping(const mt_framer *fr) { return fr->state == ST_DISCARD; }

size_t mt_framer_feed(mt_framer *fr, const uint8_t *data, size_t avail, mt_fr_event *ev) {
    memset(ev, 0, sizeof *ev);
    switch (fr->state) {
    case ST_HEADER: {
        if (avail < MT_FRAME_HEADER_BYTES) {
            ev->kind = MT_FR_NEED;
            return 0;
        }
        uint64_t n = mt_frame_get_len(data);
        if (n <= fr->max_frame) {
            fr->body_len = n;
            fr->state = ST_BODY;
            ev->kind = MT_FR_CONTINUE;
            return MT_FRAME_HEADER_BYTES;
        }
        if (fr->max_discard == 0 || n > fr->max_discard) {
            fr->state = ST_DEAD;
            ev->kind = MT_FR_VIOLATION;
            ev->code = MT__V1__ERROR_CODE__ERR_FRAME_TOO_LARGE;
            ev->length = n;
            ev->why = fr->max_discard == 0 ? "frame length over the limit before Hello"
                                           : "frame length over the limit (too large to skip)";
            return MT_FRAME_HEADER_BYTES;
        }
        fr->body_len = n;
        fr->state = ST_PEEK;
        ev->kind = MT_FR_CONTINUE;
        return MT_FRAME_HEADER_BYTES;
    }
    case ST_PEEK: {
        size_t need = mt_framer_need(fr);
        if (avail < need) {
            ev->kind = MT_FR_NEED;
            return 0;
        }
        uint64_t id = 0;
        mt_frame_peek_id(data, need, &id);
        ev->kind = MT_FR_OVERSIZE;
        ev->id = id;
        ev->length = fr->body_len;
        fr->discard_left = fr->body_len;
        fr->state = ST_DISCARD;
        return 0;
    }
    case ST_DISCARD: {
        if (avail == 0) {
            ev->kind = MT_FR_NEED;
            return 0;
        }
        size_t take = avail < fr->discard_left ? avail : (size_t)fr->discard_left;
        fr->discard_left -= take;
        fr->skipped_bytes += take;
        if (fr->discard_left == 0) fr->state = ST_HEADER;
        ev->kind = MT_FR_CONTINUE;
        return take;
    }
    case ST_BODY: {
        if (avail < fr->body_len) {
            ev->kind = MT_FR_NEED;
            return 0;
        }
        size_t n = (size_t)fr->body_len;
        const char *why = NULL;
        int code = mt_frame_decode(data, n, &ev->frame, &why);
        if (code) {
            fr->state = ST_DEAD;
            ev->kind = MT_FR_VIOLATION;
            ev->code = code;
            ev->why = why;
            ev->length = n;
            return n;
        }
        fr->state = ST_HEADER;
        fr->frames++;
        ev->kind = MT_FR_FRAME;
        return n;
    }
    default:
        ev->kind = MT_FR_VIOLATION;
        ev->code = MT__V1__ERROR_CODE__ERR_BAD_FRAME;
        ev->why = "the connection already broke the protocol";
        return 0;
    }
}

bool mt_frame_client_body(int c) {
    switch (c) {
    case MT__V1__FRAME__BODY_HELLO:
    case MT__V1__FRAME__BODY_BYE:
    case MT__V1__FRAME__BODY_TRANSLATE:
    case MT__V1__FRAME__BODY_HEALTH:
    case MT__V1__FRAME__BODY_STATS:
    case MT__V1__FRAME__BODY_TRAIN_START:
    case MT__V1__FRAME__BODY_TRAIN_STATUS:
    case MT__V1__FRAME__BODY_TRAIN_STOP:
    case MT__V1__FRAME__BODY_TRAIN_SAVE:
    case MT__V1__FRAME__BODY_MODEL_PROMOTE:
    case MT__V1__FRAME__BODY_TRAIN_SUBSCRIBE:
    case MT__V1__FRAME__BODY_CLUSTER_JOIN:
    case MT__V1__FRAME__BODY_CLUSTER_HEARTBEAT:
    case MT__V1__FRAME__BODY_CLUSTER_FETCH:
        return true;
    default:
        return false;
    }
}

int mt_frame_check_envelope(const mt_frame *f, const char **why) {
    if (f->id == 0) {
        *why = "request id 0 (ids are chosen by the client and must be non-zero)";
        return MT__V1__ERROR_CODE__ERR_BAD_FRAME;
    }
    if (!mt_frame_client_body(f->body_case)) {
        *why = "a body only the server sends";
        return MT__V1__ERROR_CODE__ERR_BAD_FRAME;
    }
    return 0;
}

long mt_utf8_count(const char *s, long max) {
    const unsigned char *p = (const unsigned char *)s;
    long n = 0;
    while (*p) {
        unsigned c = *p;
        int len;
        unsigned cp;
        if (c < 0x80) {
            p++;
            goto counted;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return -1;
        }
        for (int i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80) return -1;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return -1;
        p += len;
    counted:
        if (++n > max) return n;
    }
    return n;
}

/* Each of strs (n) valid UTF-8 of at most max_chars code points; what names them in msg. */
static int check_texts(char *const *strs, size_t n, const char *what, const mt_check_limits *lim, char *msg,
                       size_t msglen) {
    for (size_t i = 0; i < n; i++) {
        long len = mt_utf8_count(strs[i], (long)lim->max_chars);
        if (len < 0) {
            snprintf(msg, msglen, "%s %zu is not valid UTF-8", what, i);
            return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
        }
        if (len > (long)lim->max_chars) {
            snprintf(msg, msglen, "%s %zu is longer than %u characters", what, i, lim->max_chars);
            return MT__V1__ERROR_CODE__ERR_SENTENCE_TOO_LONG;
        }
    }
    return 0;
}

int mt_frame_check_translate(const Mt__V1__TranslateRequest *t, const mt_check_limits *lim, char *msg,
                             size_t msglen) {
    if (t->n_texts == 0) {
        snprintf(msg, msglen, "a translate request needs at least one text");
        return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
    }
    if (t->n_texts > lim->max_sentences) {
        snprintf(msg, msglen, "%zu sentences in one request; the limit is %u", t->n_texts, lim->max_sentences);
        return MT__V1__ERROR_CODE__ERR_TOO_MANY_SENTENCES;
    }
    int code = check_texts(t->texts, t->n_texts, "text", lim, msg, msglen);
    if (code) return code;
    if (t->beam_size > MT_PROTOCOL_MAX_BEAM) {
        snprintf(msg, msglen, "beam_size %u is out of range 0..%d", t->beam_size, MT_PROTOCOL_MAX_BEAM);
        return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
    }
    uint32_t beam = t->beam_size ? t->beam_size : 1;
    if (t->n_best > beam) {
        snprintf(msg, msglen, "n_best %u is more than the beam size %u", t->n_best, beam);
        return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
    }
    if (t->n_target_prefixes != 0 && t->n_target_prefixes != t->n_texts) {
        snprintf(msg, msglen, "%zu target prefixes for %zu texts (none, or one per text)", t->n_target_prefixes,
                 t->n_texts);
        return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
    }
    code = check_texts(t->target_prefixes, t->n_target_prefixes, "target prefix", lim, msg, msglen);
    if (code) return code;
    bool has_lp = t->length_penalty_set_case == MT__V1__TRANSLATE_REQUEST__LENGTH_PENALTY_SET_LENGTH_PENALTY;
    if (has_lp && !(t->length_penalty >= 0.0f && t->length_penalty <= 5.0f)) {
        snprintf(msg, msglen, "length_penalty %g is out of range 0..5", (double)t->length_penalty);
        return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
    }
    if (!(t->max_len_ratio >= 0.0f && t->max_len_ratio <= 10.0f)) {
        snprintf(msg, msglen, "max_len_ratio %g is out of range 0..10", (double)t->max_len_ratio);
        return MT__V1__ERROR_CODE__ERR_INVALID_ARGUMENT;
    }
    return 0;
}

const char *mt_error_code_name(int code) {
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(&mt__v1__error_code__descriptor, code);
    return v ? v->name : "ERR_UNKNOWN";
}
