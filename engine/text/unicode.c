/*
 * unicode.c — character classes over utf8proc categories (see unicode.h for what each class mirrors)
 * and UTF-8 helpers.
 */
#include "text/unicode.h"

#include <string.h>
#include <utf8proc.h>

/* Built by hand from the definitions: ASCII White_Space is \t..\r and space; Python adds \x1c..\x1f;
 * \w is [0-9A-Za-z_]; every other printable ASCII is punctuation for HF (is_ascii_punctuation). */
#define S (MT_UC_SPACE | MT_UC_PYSPACE)
#define W (MT_UC_WORD | MT_UC_LETTER | MT_UC_ALNUM)
#define D (MT_UC_WORD | MT_UC_NUMERIC | MT_UC_ALNUM)
#define P MT_UC_PUNCT
const uint8_t mt_uc_ascii_flags[128] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, S, S, S, S, S, 0, 0,                                  /* 00-0F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, MT_UC_PYSPACE, MT_UC_PYSPACE, MT_UC_PYSPACE, MT_UC_PYSPACE, /* 10-1F */
    S, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P,                                  /* ' '../ */
    D, D, D, D, D, D, D, D, D, D, P, P, P, P, P, P,                                  /* 0-9 :..? */
    P, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W,                                  /* @ A-O */
    W, W, W, W, W, W, W, W, W, W, W, P, P, P, P, P | MT_UC_WORD,                     /* P-Z [\]^_ */
    P, W, W, W, W, W, W, W, W, W, W, W, W, W, W, W,                                  /* ` a-o */
    W, W, W, W, W, W, W, W, W, W, W, P, P, P, P, 0,                                  /* p-z {|}~ DEL */
};
#undef S
#undef W
#undef D
#undef P

static int is_white_space(uint32_t c) {
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* The Punctuation and Bert pre-tokenizers of `tokenizers` test is_punctuation with the
 * unicode_categories crate, whose tables are Unicode 9.0. These code points are punctuation (P*) in
 * utf8proc's Unicode 15 but were not in 9.0 (added since), so they are not punctuation here either;
 * U+166D and U+111C9 were punctuation in 9.0 and no longer are, and still count as punctuation.
 * (Found by comparing every assigned code point with `tokenizers`; see test_text_hf_tokenizers.) */
static const uint32_t punct_after_9[][2] = {
    {0x061D, 0x061D},   {0x09FD, 0x09FD},   {0x0A76, 0x0A76},   {0x0C77, 0x0C77},   {0x0C84, 0x0C84},
    {0x1B7D, 0x1B7E},   {0x2E43, 0x2E4F},   {0x2E52, 0x2E5D},   {0x10EAD, 0x10EAD}, {0x10F55, 0x10F59},
    {0x10F86, 0x10F89}, {0x1144B, 0x1144F}, {0x1145A, 0x1145B}, {0x1145D, 0x1145D}, {0x11660, 0x1166C},
    {0x116B9, 0x116B9}, {0x1183B, 0x1183B}, {0x11944, 0x11946}, {0x119E2, 0x119E2}, {0x11A3F, 0x11A46},
    {0x11A9A, 0x11A9C}, {0x11A9E, 0x11AA2}, {0x11C41, 0x11C45}, {0x11C70, 0x11C71}, {0x11EF7, 0x11EF8},
    {0x11FFF, 0x11FFF}, {0x12FF1, 0x12FF2}, {0x16E97, 0x16E9A}, {0x16FE2, 0x16FE2}, {0x1E95E, 0x1E95F},
};

unsigned mt_uc_flags_slow(uint32_t cp) {
    if (cp > 0x10FFFF) return 0;
    unsigned f = 0;
    if (is_white_space(cp)) f |= MT_UC_SPACE | MT_UC_PYSPACE;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: f |= MT_UC_LETTER | MT_UC_WORD | MT_UC_ALNUM; break;
    case UTF8PROC_CATEGORY_MN: f |= MT_UC_WORD | MT_UC_MN; break;
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME: f |= MT_UC_WORD; break;
    case UTF8PROC_CATEGORY_ND: f |= MT_UC_NUMERIC | MT_UC_WORD | MT_UC_ALNUM; break;
    case UTF8PROC_CATEGORY_NL: f |= MT_UC_NUMERIC | MT_UC_WORD | MT_UC_ALNUM; break; /* Nl is Alphabetic */
    case UTF8PROC_CATEGORY_NO: f |= MT_UC_NUMERIC | MT_UC_ALNUM; break;
    case UTF8PROC_CATEGORY_PC: f |= MT_UC_PUNCT | MT_UC_WORD; break;
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO: f |= MT_UC_PUNCT; break;
    case UTF8PROC_CATEGORY_SO:
        /* Other_Alphabetic symbols (circled and squared Latin letters) are Alphabetic, hence \w. */
        if ((cp >= 0x24B6 && cp <= 0x24E9) || (cp >= 0x1F130 && cp <= 0x1F149) || (cp >= 0x1F150 && cp <= 0x1F169) ||
            (cp >= 0x1F170 && cp <= 0x1F189))
            f |= MT_UC_WORD | MT_UC_ALNUM;
        break;
    default: break;
    }
    if (cp == 0x200C || cp == 0x200D) f |= MT_UC_WORD; /* Join_Control */
    if (f & MT_UC_PUNCT) {
        for (size_t i = 0; i < sizeof punct_after_9 / sizeof punct_after_9[0]; i++)
            if (cp >= punct_after_9[i][0] && cp <= punct_after_9[i][1]) {
                f &= ~(unsigned)MT_UC_PUNCT;
                break;
            }
    } else if (cp == 0x166D || cp == 0x111C9) {
        f |= MT_UC_PUNCT;
    }
    return f;
}

size_t mt_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

int mt_utf8_valid(const char *s, size_t n, size_t *bad_off) {
    size_t i = 0;
    while (i < n) {
        /* Eight ASCII bytes at a time: corpora are mostly ASCII. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp = 0;
        size_t k = mt_utf8_decode(s + i, n - i, &cp);
        if (!k) {
            if (bad_off) *bad_off = i;
            return 0;
        }
        i += k;
    }
    return 1;
}

size_t mt_utf8_to_cps(const char *s, size_t n, uint32_t *out) {
    size_t i = 0, k = 0;
    while (i < n) {
        uint32_t cp = 0;
        size_t l = mt_utf8_decode(s + i, n - i, &cp);
        if (!l) { /* callers validate first; be safe anyway */
            cp = 0xFFFD;
            l = 1;
        }
        out[k++] = cp;
        i += l;
    }
    return k;
}
