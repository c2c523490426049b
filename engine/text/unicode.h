/*
 * unicode.h — UTF-8 decoding/validation and the character classes the tokenizer and the metrics
 * need, defined the way the reference implementations define them (so results match):
 *   MT_UC_SPACE    Unicode White_Space (Rust char::is_whitespace, regex \s)
 *   MT_UC_PYSPACE  Python str.isspace()/str.split() whitespace (White_Space plus U+001C..U+001F)
 *   MT_UC_WORD     regex \w as Hugging Face's Whitespace pre-tokenizer sees it: Alphabetic, marks,
 *                  decimal digits, connector punctuation, joiners
 *   MT_UC_PUNCT    HF Punctuation/Bert: ASCII punctuation (symbols included) or category P*
 *   MT_UC_NUMERIC  Rust char::is_numeric: category N*
 *   MT_UC_LETTER   category L*
 *   MT_UC_ALNUM    Rust char::is_alphanumeric
 * Categories come from utf8proc; ASCII goes through a table.
 */
#ifndef MT_TEXT_UNICODE_H
#define MT_TEXT_UNICODE_H

#include <stddef.h>
#include <stdint.h>

enum {
    MT_UC_SPACE = 1,
    MT_UC_PYSPACE = 2,
    MT_UC_WORD = 4,
    MT_UC_PUNCT = 8,
    MT_UC_NUMERIC = 16,
    MT_UC_LETTER = 32,
    MT_UC_ALNUM = 64,
    MT_UC_MN = 128 /* nonspacing mark (StripAccents) */
};

extern const uint8_t mt_uc_ascii_flags[128];
unsigned mt_uc_flags_slow(uint32_t cp);

static inline unsigned mt_uc_flags(uint32_t cp) { return cp < 128 ? mt_uc_ascii_flags[cp] : mt_uc_flags_slow(cp); }

/* Decodes the code point at s[0..n) (n >= 1). Returns its byte length, or 0 when the bytes there are
 * not well-formed UTF-8 (overlong forms, surrogates and values above U+10FFFF are rejected). */
static inline size_t mt_utf8_decode(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned c = u[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xC2) return 0;
    if (c < 0xE0) {
        if (n < 2 || (u[1] & 0xC0) != 0x80) return 0;
        *cp = ((c & 0x1Fu) << 6) | (u[1] & 0x3Fu);
        return 2;
    }
    if (c < 0xF0) {
        if (n < 3 || (u[1] & 0xC0) != 0x80 || (u[2] & 0xC0) != 0x80) return 0;
        uint32_t v = ((c & 0x0Fu) << 12) | ((u[1] & 0x3Fu) << 6) | (u[2] & 0x3Fu);
        if (v < 0x800 || (v >= 0xD800 && v <= 0xDFFF)) return 0;
        *cp = v;
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (u[1] & 0xC0) != 0x80 || (u[2] & 0xC0) != 0x80 || (u[3] & 0xC0) != 0x80) return 0;
        uint32_t v = ((c & 0x07u) << 18) | ((u[1] & 0x3Fu) << 12) | ((u[2] & 0x3Fu) << 6) | (u[3] & 0x3Fu);
        if (v < 0x10000 || v > 0x10FFFF) return 0;
        *cp = v;
        return 4;
    }
    return 0;
}

/* Byte length of the (valid) UTF-8 sequence starting with byte c. */
static inline size_t mt_utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* Writes cp as UTF-8 into out (4 bytes room); returns the length. */
size_t mt_utf8_encode(uint32_t cp, char *out);

/* Returns 1 when s[0..n) is well-formed UTF-8; else 0 and the offset of the first bad byte. */
int mt_utf8_valid(const char *s, size_t n, size_t *bad_off);

/* Decodes valid UTF-8 into code points; out needs n entries. Returns the count. */
size_t mt_utf8_to_cps(const char *s, size_t n, uint32_t *out);

#endif
