/*
 * fuzz_frame.c — libFuzzer target for the wire framing (net/frame.c): arbitrary bytes, delivered in
 * arbitrary chunks, go through the stream decoder exactly as the server drives it; every decoded
 * frame goes through the server's request checks and must survive an encode/decode round trip.
 *
 * Input layout: byte 0 picks the chunk size, byte 1 the limits (before/after Hello, the frame
 * limit), the rest is the byte stream. Invariants (trap on failure): the framer never consumes more
 * than it was given, never asks for more than the frame limit, and stops for good after a violation.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

#define CHECK(x) \
    do {         \
        if (!(x)) __builtin_trap(); \
    } while (0)

static void check_frame(mt_frame *f, const mt_check_limits *lim) {
    const char *why = NULL;
    char msg[256];
    (void)mt_frame_check_envelope(f, &why);
    if (f->body_case == MT__V1__FRAME__BODY_TRANSLATE) {
        (void)mt_frame_check_translate(f->translate, lim, msg, sizeof msg);
        for (size_t i = 0; i < f->translate->n_texts; i++) (void)mt_utf8_count(f->translate->texts[i], 1 << 20);
    }
    size_t n = 0;
    uint8_t *enc = mt_frame_encode(f, &n);
    CHECK(enc != NULL);
    CHECK(n >= MT_FRAME_HEADER_BYTES && mt_frame_get_len(enc) == n - MT_FRAME_HEADER_BYTES);
    mt_frame *g = NULL;
    CHECK(mt_frame_decode(enc + MT_FRAME_HEADER_BYTES, n - MT_FRAME_HEADER_BYTES, &g, &why) == 0);
    CHECK(g->id == f->id && g->body_case == f->body_case);
    uint64_t id = 0;
    if (f->id != 0) CHECK(mt_frame_peek_id(enc + MT_FRAME_HEADER_BYTES, n - MT_FRAME_HEADER_BYTES, &id) && id == f->id);
    mt_frame_free(g);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t chunk = (size_t)data[0] % 64 + 1;
    uint8_t mode = data[1];
    data += 2;
    size -= 2;
    uint64_t max_frame = (mode & 1) ? 64 : 4096, max_discard = (mode & 2) ? 0 : (mode & 4 ? 1 << 20 : 8192);
    mt_check_limits lim = {(uint32_t)(mode >> 4) + 1, 16};
    mt_framer fr;
    mt_framer_init(&fr, max_frame, max_discard);

    /* The "socket" delivers `chunk` bytes at a time into a buffer the framer consumes from. */
    uint8_t *buf = malloc(size + 1);
    size_t have = 0, pos = 0, delivered = 0;
    int dead = 0;
    while (!dead) {
        if (delivered < size) {
            size_t take = size - delivered < chunk ? size - delivered : chunk;
            memcpy(buf + have, data + delivered, take);
            have += take;
            delivered += take;
        }
        int progressed = 0;
        for (;;) {
            mt_fr_event ev;
            size_t avail = have - pos, used;
            if (mt_framer_skipping(&fr)) {
                used = mt_framer_feed(&fr, NULL, avail, &ev);
                CHECK(used <= avail);
            } else {
                size_t need = mt_framer_need(&fr);
                CHECK(need <= max_frame || need == MT_FRAME_ID_PREFIX);
                if (avail < need) break;
                /* A fresh copy, exactly `need` bytes long, so ASan sees any over-read. */
                uint8_t *p = need ? malloc(need) : NULL;
                if (need) memcpy(p, buf + pos, need);
                used = mt_framer_feed(&fr, p, need, &ev);
                free(p);
                CHECK(used <= need);
            }
            pos += used;
            if (used) progressed = 1;
            if (ev.kind == MT_FR_NEED) break;
            if (ev.kind == MT_FR_FRAME) {
                check_frame(ev.frame, &lim);
                mt_frame_free(ev.frame);
                progressed = 1;
            } else if (ev.kind == MT_FR_OVERSIZE) {
                CHECK(ev.length > max_frame);
                progressed = 1;
            } else if (ev.kind == MT_FR_VIOLATION) {
                mt_fr_event again;
                CHECK(mt_framer_feed(&fr, buf + pos, 0, &again) == 0 && again.kind == MT_FR_VIOLATION);
                dead = 1;
                break;
            }
        }
        if (delivered == size && !progressed) break;
    }
    free(buf);
    return 0;
}
