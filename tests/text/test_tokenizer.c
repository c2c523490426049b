/*
 * test_tokenizer.c — engine/text's tokenizer on cases whose answers are known by hand: BPE merge
 * order and priority, the split behaviours and pre-tokenizers (the examples of the `tokenizers`
 * documentation), normalizers, decoders, added tokens, training on a hand-checkable corpus,
 * lossless decode, tokenizer.json round trips and errors, the ABI functions, and encoding from
 * several threads at once.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "microtensor.h"
#include "text/tokenizer.h"
#include "text_test.h"

static char dir[512];

/* A tokenizer.json with the given sections (JSON text) around a model. */
static mt_tokenizer *load_json(const char *normalizer, const char *pre, const char *decoder, const char *model,
                               const char *added) {
    char json[16384];
    snprintf(json, sizeof json,
             "{\"version\":\"1.0\",\"added_tokens\":%s,\"normalizer\":%s,\"pre_tokenizer\":%s,\"post_processor\":null,"
             "\"decoder\":%s,\"model\":%s}",
             added ? added : "[]", normalizer ? normalizer : "null", pre ? pre : "null", decoder ? decoder : "null", model);
    mt_tokenizer *tok = NULL;
    mt_status st = mt_tok_load_json(json, strlen(json), "test", &tok);
    if (st != MT_OK) fprintf(stderr, "load failed: %s\n", mt_last_error());
    assert_int_equal(st, MT_OK);
    return tok;
}

/* The tokens of text joined by '|'. */
static void tokens_of(const mt_tokenizer *tok, const char *text, char *out, size_t cap) {
    mt_ids ids = {0};
    assert_int_equal(mt_tok_encode(tok, text, strlen(text), &ids), MT_OK);
    out[0] = '\0';
    for (size_t i = 0; i < ids.n; i++) {
        size_t len = 0;
        const char *t = mt_tok_id_to_token(tok, ids.v[i], &len);
        assert_non_null(t);
        if (i) strncat(out, "|", cap - strlen(out) - 1);
        strncat(out, t, len < cap - strlen(out) - 1 ? len : cap - strlen(out) - 1);
    }
    mt_ids_free(&ids);
}

typedef struct joiner {
    char buf[4096];
    int n;
} joiner;

static void join_piece(const char *p, size_t len, void *user) {
    joiner *j = user;
    if (j->n++) strcat(j->buf, "|");
    strncat(j->buf, p, len);
}

static void pieces_of(const mt_tokenizer *tok, const char *text, char *out) {
    joiner j;
    memset(&j, 0, sizeof j);
    assert_int_equal(mt_tok_pre_tokenize(tok, text, strlen(text), join_piece, &j), MT_OK);
    strcpy(out, j.buf);
}

static const char *ABC_MODEL =
    "{\"type\":\"BPE\",\"unk_token\":\"[UNK]\",\"vocab\":{\"[UNK]\":0,\"a\":1,\"b\":2,\"c\":3,\"ab\":4,\"bc\":5,"
    "\"abc\":6,\"aa\":7},\"merges\":[%s]}";

static void test_bpe_merge_priority(void **state) {
    (void)state;
    char model[1024], got[512];
    /* (a,b) before (b,c): "abc" -> ab|c, then (ab,c) is not a merge */
    snprintf(model, sizeof model, ABC_MODEL, "[\"a\",\"b\"],[\"b\",\"c\"]");
    mt_tokenizer *t = load_json(NULL, "{\"type\":\"WhitespaceSplit\"}", NULL, model, NULL);
    tokens_of(t, "abc", got, sizeof got);
    assert_string_equal(got, "ab|c");
    mt_tok_free(t);
    /* (b,c) ranks first: a|bc */
    snprintf(model, sizeof model, ABC_MODEL, "\"b c\",\"a b\"");
    t = load_json(NULL, "{\"type\":\"WhitespaceSplit\"}", NULL, model, NULL);
    tokens_of(t, "abc", got, sizeof got);
    assert_string_equal(got, "a|bc");
    /* unknown characters become [UNK] (not fused); other words go through on their own */
    tokens_of(t, "axc bca", got, sizeof got);
    assert_string_equal(got, "a|[UNK]|c|bc|a");
    mt_tok_free(t);
    /* chained merges, and the leftmost of equal pairs first: "aaa" -> aa|a */
    snprintf(model, sizeof model, ABC_MODEL, "[\"a\",\"b\"],[\"ab\",\"c\"],[\"a\",\"a\"]");
    t = load_json(NULL, "{\"type\":\"WhitespaceSplit\"}", NULL, model, NULL);
    tokens_of(t, "abcab aaa", got, sizeof got);
    assert_string_equal(got, "abc|ab|aa|a");
    mt_tok_free(t);
}

static void test_fuse_unk_and_byte_fallback(void **state) {
    (void)state;
    char got[512];
    mt_tokenizer *t = load_json(NULL, NULL, NULL,
                                "{\"type\":\"BPE\",\"unk_token\":\"[UNK]\",\"fuse_unk\":true,"
                                "\"vocab\":{\"[UNK]\":0,\"a\":1},\"merges\":[]}",
                                NULL);
    tokens_of(t, "axyza", got, sizeof got);
    assert_string_equal(got, "a|[UNK]|a");
    mt_tok_free(t);
    /* byte fallback: é (C3 A9) has no token but its bytes do; decode puts the bytes back */
    t = load_json(NULL, NULL, "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]}",
                  "{\"type\":\"BPE\",\"unk_token\":\"[UNK]\",\"byte_fallback\":true,"
                  "\"vocab\":{\"[UNK]\":0,\"a\":1,\"<0xC3>\":2,\"<0xA9>\":3},\"merges\":[]}",
                  NULL);
    tokens_of(t, "a\xC3\xA9\xC3\xA8", got, sizeof got); /* è: C3 A8, A8 missing -> [UNK] */
    assert_string_equal(got, "a|<0xC3>|<0xA9>|[UNK]");
    int32_t ids[] = {1, 2, 3, 1, 2};
    mt_buf b = {0};
    assert_int_equal(mt_tok_decode(t, ids, 5, &b), MT_OK);
    /* a lone C3 is invalid UTF-8: one U+FFFD per byte, as ByteFallback does */
    assert_string_equal(b.p, "a\xC3\xA9" "a\xEF\xBF\xBD");
    mt_buf_free(&b);
    mt_tok_free(t);
}

static void test_split_behaviours(void **state) {
    (void)state;
    /* the example of NormalizedString::split's documentation */
    static const char *const beh[][2] = {
        {"Removed", "The|final|countdown"},
        {"Isolated", "The|-|final|-|-|countdown"},
        {"MergedWithPrevious", "The-|final-|-|countdown"},
        {"MergedWithNext", "The|-final|-|-countdown"},
        {"Contiguous", "The|-|final|--|countdown"},
    };
    char pre[256], got[512];
    for (size_t i = 0; i < 5; i++) {
        snprintf(pre, sizeof pre, "{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"%s\",\"invert\":false}", beh[i][0]);
        mt_tokenizer *t = load_json(NULL, pre, NULL, "{\"type\":\"WordLevel\",\"vocab\":{\"x\":0},\"unk_token\":\"x\"}", NULL);
        pieces_of(t, "The-final--countdown", got);
        assert_string_equal(got, beh[i][1]);
        mt_tok_free(t);
    }
    /* invert: the pattern's occurrences are the pieces kept apart */
    mt_tokenizer *t = load_json(NULL, "{\"type\":\"Split\",\"pattern\":{\"String\":\"ab\"},\"behavior\":\"Removed\",\"invert\":true}",
                                NULL, "{\"type\":\"WordLevel\",\"vocab\":{\"x\":0},\"unk_token\":\"x\"}", NULL);
    pieces_of(t, "xababy", got);
    assert_string_equal(got, "ab|ab");
    mt_tok_free(t);
}

static void test_pre_tokenizers(void **state) {
    (void)state;
    const char *wl = "{\"type\":\"WordLevel\",\"vocab\":{\"x\":0},\"unk_token\":\"x\"}";
    char got[1024];
    /* Whitespace = \w+|[^\w\s]+ : ½ (No) is not \w, _ (Pc) is, accented letters are */
    mt_tokenizer *t = load_json(NULL, "{\"type\":\"Whitespace\"}", NULL, wl, NULL);
    pieces_of(t, "Hello, world!! 3\xC2\xBD l'uomo x_y \xC3\xA8 \xE2\x80\xA6", got);
    assert_string_equal(got, "Hello|,|world|!!|3|\xC2\xBD|l|'|uomo|x_y|\xC3\xA8|\xE2\x80\xA6");
    mt_tok_free(t);
    /* Punctuation isolates ASCII symbols ($) and P* (« » … ¿) but not € (Sc) */
    t = load_json(NULL, "{\"type\":\"Punctuation\",\"behavior\":\"Isolated\"}", NULL, wl, NULL);
    pieces_of(t, "a\xE2\x82\xAC" "b$c\xC2\xAB" "d\xC2\xBB" "e..", got);
    assert_string_equal(got, "a\xE2\x82\xAC" "b|$|c|\xC2\xAB|d|\xC2\xBB|e|.|.");
    mt_tok_free(t);
    /* Digits: runs of N* together, or one by one */
    t = load_json(NULL, "{\"type\":\"Digits\",\"individual_digits\":false}", NULL, wl, NULL);
    pieces_of(t, "a12b\xC2\xBD" "c", got);
    assert_string_equal(got, "a|12|b|\xC2\xBD|c");
    mt_tok_free(t);
    t = load_json(NULL, "{\"type\":\"Digits\",\"individual_digits\":true}", NULL, wl, NULL);
    pieces_of(t, "a12b", got);
    assert_string_equal(got, "a|1|2|b");
    mt_tok_free(t);
    /* Metaspace: spaces become ▁ and start the next piece; prepend schemes */
    t = load_json(NULL, "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"always\",\"split\":true}", NULL, wl, NULL);
    pieces_of(t, "a  b c", got);
    assert_string_equal(got, "\xE2\x96\x81" "a|\xE2\x96\x81|\xE2\x96\x81" "b|\xE2\x96\x81" "c");
    pieces_of(t, " a", got); /* already starts with a space: nothing prepended */
    assert_string_equal(got, "\xE2\x96\x81" "a");
    mt_tok_free(t);
    t = load_json(NULL, "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"never\",\"split\":false}", NULL, wl, NULL);
    pieces_of(t, "a b", got);
    assert_string_equal(got, "a\xE2\x96\x81" "b");
    mt_tok_free(t);
    /* ByteLevel: GPT-2's regex, spaces as Ġ (U+0120), newlines as Ċ (U+010A); the last space of a run
     * goes with the next word */
    t = load_json(NULL, "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true}", NULL, wl, NULL);
    pieces_of(t, "Hello  world\n\n x 's  ", got);
    assert_string_equal(got, "\xC4\xA0Hello|\xC4\xA0|\xC4\xA0world|\xC4\x8A\xC4\x8A|\xC4\xA0x|\xC4\xA0'|s|\xC4\xA0\xC4\xA0");
    pieces_of(t, "it's 2024", got);
    assert_string_equal(got, "\xC4\xA0it|'s|\xC4\xA0" "2024");
    mt_tok_free(t);
    /* Bert: whitespace removed, punctuation isolated */
    t = load_json(NULL, "{\"type\":\"BertPreTokenizer\"}", NULL, wl, NULL);
    pieces_of(t, "Hi, there!x", got);
    assert_string_equal(got, "Hi|,|there|!|x");
    mt_tok_free(t);
}

static void normalized_of(const char *normalizer, const char *text, char *out) {
    mt_tokenizer *t = load_json(normalizer, NULL, NULL, "{\"type\":\"WordLevel\",\"vocab\":{\"x\":0},\"unk_token\":\"x\"}", NULL);
    mt_buf b = {0};
    assert_int_equal(mt_tok_normalize(t, text, strlen(text), &b), MT_OK);
    strcpy(out, b.p);
    mt_buf_free(&b);
    mt_tok_free(t);
}

static void test_normalizers(void **state) {
    (void)state;
    char got[512];
    /* NFKC: ligature, ellipsis, superscript, full-width letter, NBSP; e + combining acute composes */
    normalized_of("{\"type\":\"NFKC\"}", "\xEF\xAC\x81 \xE2\x80\xA6 x\xC2\xB2 \xEF\xBC\xA1\xC2\xA0" "e\xCC\x81", got);
    assert_string_equal(got, "fi ... x2 A \xC3\xA9");
    normalized_of("{\"type\":\"NFD\"}", "\xC3\xA9", got);
    assert_string_equal(got, "e\xCC\x81");
    normalized_of("{\"type\":\"NFC\"}", "e\xCC\x81 \xEF\xAC\x81", got); /* NFC keeps the ligature */
    assert_string_equal(got, "\xC3\xA9 \xEF\xAC\x81");
    /* Lowercase: İ has a two-character lowercase; Σ lowercases to σ wherever it is */
    normalized_of("{\"type\":\"Lowercase\"}", "\xC4\xB0STANBUL \xCE\xA3\xCE\x91\xCE\xA3 \xC3\x88", got);
    assert_string_equal(got, "i\xCC\x87stanbul \xCF\x83\xCE\xB1\xCF\x83 \xC3\xA8");
    normalized_of("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFD\"},{\"type\":\"StripAccents\"},{\"type\":\"Lowercase\"}]}",
                  "\xC3\x89l\xC3\xA9gant", got);
    assert_string_equal(got, "elegant");
    normalized_of("{\"type\":\"Strip\",\"strip_left\":true,\"strip_right\":false}", " \t x \n", got);
    assert_string_equal(got, "x \n");
    normalized_of("{\"type\":\"Replace\",\"pattern\":{\"String\":\"aa\"},\"content\":\"b\"}", "aaaab", got);
    assert_string_equal(got, "bbb");
    normalized_of("{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"}", "x", got);
    assert_string_equal(got, "\xE2\x96\x81x");
}

static void decoded_of(const char *decoder, const char *const *tokens, size_t n, char *out) {
    /* a word-level vocabulary made of the tokens themselves */
    char model[4096] = "{\"type\":\"WordLevel\",\"unk_token\":\"[UNK]\",\"vocab\":{\"[UNK]\":0";
    for (size_t i = 0; i < n; i++) {
        char e[256];
        snprintf(e, sizeof e, ",\"%s\":%zu", tokens[i], i + 1);
        strcat(model, e);
    }
    strcat(model, "}}");
    mt_tokenizer *t = load_json(NULL, NULL, decoder, model,
                                "[{\"id\":0,\"content\":\"[UNK]\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                                "\"normalized\":false,\"special\":true}]");
    int32_t ids[32];
    ids[0] = 0; /* special: dropped, and not counted as the first token */
    for (size_t i = 0; i < n; i++) ids[i + 1] = (int32_t)(i + 1);
    mt_buf b = {0};
    assert_int_equal(mt_tok_decode(t, ids, n + 1, &b), MT_OK);
    strcpy(out, b.p);
    mt_buf_free(&b);
    mt_tok_free(t);
}

static void test_decoders(void **state) {
    (void)state;
    char got[512];
    const char *ms[] = {"\xE2\x96\x81\xE2\x96\x81" "a", "\xE2\x96\x81" "b", "c\xE2\x96\x81"};
    /* every ▁ of the first token goes (the prepended one), the others are spaces */
    decoded_of("{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"always\",\"split\":true}", ms, 3, got);
    assert_string_equal(got, "a bc ");
    decoded_of("{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"never\",\"split\":true}", ms, 3, got);
    assert_string_equal(got, "  a bc ");
    const char *bl[] = {"\xC4\xA0h", "\xC3\x83", "\xC2\xA8"}; /* Ġh Ã ¨ = bytes " h" C3 A8 */
    decoded_of("{\"type\":\"ByteLevel\"}", bl, 3, got);
    assert_string_equal(got, " h\xC3\xA8");
    const char *bpe[] = {"hel", "lo</w>", "wor", "ld</w>"};
    decoded_of("{\"type\":\"BPEDecoder\",\"suffix\":\"</w>\"}", bpe, 4, got);
    assert_string_equal(got, "hello world");
    const char *wp[] = {"hello", "##s", ",", "do", "not"};
    /* cleanup works token by token: " do" and " not" stay apart, " ," loses its space */
    decoded_of("{\"type\":\"WordPiece\",\"prefix\":\"##\",\"cleanup\":true}", wp, 5, got);
    assert_string_equal(got, "hellos, do not");
    const char *st[] = {"__a_", "_b__"};
    decoded_of("{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Strip\",\"content\":\"_\",\"start\":1,\"stop\":1},"
               "{\"type\":\"Replace\",\"pattern\":{\"String\":\"_\"},\"content\":\"-\"}]}", st, 2, got);
    assert_string_equal(got, "-ab-");
    /* no decoder: tokens joined by single spaces */
    const char *plain[] = {"Hello", ",", "world"};
    decoded_of(NULL, plain, 3, got);
    assert_string_equal(got, "Hello , world");
}

static const char *SPECIALS =
    "[{\"id\":0,\"content\":\"[PAD]\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
    "{\"id\":1,\"content\":\"[UNK]\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
    "{\"id\":2,\"content\":\"[SOS]\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true},"
    "{\"id\":3,\"content\":\"[EOS]\",\"single_word\":false,\"lstrip\":true,\"rstrip\":true,\"normalized\":false,\"special\":true},"
    "{\"id\":9,\"content\":\"<x>\",\"single_word\":true,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":false}]";

static void test_added_tokens(void **state) {
    (void)state;
    mt_tokenizer *t = load_json(NULL, "{\"type\":\"WhitespaceSplit\"}", NULL,
                                "{\"type\":\"WordLevel\",\"unk_token\":\"[UNK]\",\"vocab\":{\"[PAD]\":0,\"[UNK]\":1,"
                                "\"[SOS]\":2,\"[EOS]\":3,\"a\":4,\"b\":5,\"<x>b\":6}}",
                                SPECIALS);
    mt_tok_specials sp = mt_tok_get_specials(t);
    assert_int_equal(sp.pad, 0);
    assert_int_equal(sp.unk, 1);
    assert_int_equal(sp.sos, 2);
    assert_int_equal(sp.eos, 3);
    assert_int_equal(mt_tok_vocab_size(t), 10); /* the added token <x> has id 9 */
    assert_true(mt_tok_is_special(t, 3));
    assert_false(mt_tok_is_special(t, 9));
    mt_ids ids = {0};
    /* "[EOS]" in the text is the token, its spaces stripped (lstrip/rstrip) */
    assert_int_equal(mt_tok_encode(t, "a [EOS] b[SOS]a", 15, &ids), MT_OK);
    int32_t want[] = {4, 3, 5, 2, 4};
    assert_int_equal(ids.n, 5);
    assert_memory_equal(ids.v, want, sizeof want);
    /* single_word: <x> counts only standing alone */
    ids.n = 0;
    assert_int_equal(mt_tok_encode(t, "a <x> <x>b", 10, &ids), MT_OK);
    int32_t want2[] = {4, 9, 6};
    assert_int_equal(ids.n, 3);
    assert_memory_equal(ids.v, want2, sizeof want2);
    /* decode drops special tokens but keeps the non-special added one */
    mt_buf b = {0};
    int32_t dec[] = {2, 4, 9, 5, 3, 0, 0};
    assert_int_equal(mt_tok_decode(t, dec, 7, &b), MT_OK);
    assert_string_equal(b.p, "a <x> b");
    int32_t badid[] = {4, 42};
    assert_int_equal(mt_tok_decode(t, badid, 2, &b), MT_ERR_INVALID_ARG);
    assert_non_null(strstr(mt_last_error(), "position 1"));
    mt_buf_free(&b);
    mt_ids_free(&ids);
    mt_tok_free(t);
}

/* Writes a small TSV corpus of the test's own sentences and returns its path. */
static void write_corpus(char *path, const char *text) {
    static int k;
    char name[64];
    snprintf(name, sizeof name, "corpus%d.tsv", k++);
    tt_path(path, 1024, dir, name);
    assert_int_equal(tt_write_str(path, text), 0);
}

static void test_train_bpe_by_hand(void **state) {
    (void)state;
    /* words ab x3, abc, bc: (a,b)=4 merges first; then (b,c) and (ab,c) both count 1 and the smaller
     * pair of ids, (b=5, c=6) before (ab=7, c=6), goes first; then (ab,c). */
    char path[1024];
    write_corpus(path, "ab ab\tab abc bc\n");
    mt_tok_train_options o;
    mt_tok_train_options_default(&o, MT_TOK_BPE);
    o.normalization = "none";
    o.pre_tokenizer = "whitespace_split";
    o.min_frequency = 1;
    o.vocab_size = 100;
    const char *specs[] = {path};
    mt_tokenizer *t = NULL;
    mt_corpus_summary sum;
    assert_int_equal(mt_tok_train_corpora(specs, 1, &o, NULL, &t, &sum), MT_OK);
    assert_int_equal(sum.pairs, 1);
    assert_int_equal(mt_tok_vocab_size(t), 10);
    static const char *const vocab[] = {"[PAD]", "[UNK]", "[SOS]", "[EOS]", "a", "b", "c", "ab", "bc", "abc"};
    for (int32_t i = 0; i < 10; i++) {
        size_t len = 0;
        const char *s = mt_tok_id_to_token(t, i, &len);
        assert_int_equal(len, strlen(vocab[i]));
        assert_memory_equal(s, vocab[i], len);
    }
    char *json = NULL;
    assert_int_equal(mt_tok_to_json(t, &json, NULL), MT_OK);
    const char *m = strstr(json, "\"merges\"");
    assert_non_null(m);
    char compact[256];
    size_t k = 0;
    for (const char *p = m; *p && k < sizeof compact - 1; p++)
        if (*p != ' ' && *p != '\n') compact[k++] = *p;
    compact[k] = '\0';
    assert_non_null(strstr(compact, "\"merges\":[[\"a\",\"b\"],[\"b\",\"c\"],[\"ab\",\"c\"]]"));
    mt_sys_free(json);
    mt_tok_free(t);
    /* min_frequency 2 keeps only (a,b) */
    o.min_frequency = 2;
    assert_int_equal(mt_tok_train_corpora(specs, 1, &o, NULL, &t, NULL), MT_OK);
    assert_int_equal(mt_tok_vocab_size(t), 8);
    mt_tok_free(t);
    /* vocab_size stops the merges */
    o.min_frequency = 1;
    o.vocab_size = 9;
    assert_int_equal(mt_tok_train_corpora(specs, 1, &o, NULL, &t, NULL), MT_OK);
    assert_int_equal(mt_tok_vocab_size(t), 9);
    assert_int_equal(mt_tok_token_to_id(t, "bc", 2), 8);
    assert_int_equal(mt_tok_token_to_id(t, "abc", 3), -1);
    mt_tok_free(t);
}

static void test_train_wordlevel_by_hand(void **state) {
    (void)state;
    /* counts: the 4, cat 3, a 2, sat 1, "." 3 ; order: count desc, then bytes */
    char path[1024];
    write_corpus(path, "the cat .\tthe cat sat .\nthe cat a a\tthe .\n");
    mt_tok_train_options o;
    mt_tok_train_options_default(&o, MT_TOK_WORDLEVEL);
    o.min_frequency = 2;
    const char *specs[] = {path};
    mt_tokenizer *t = NULL;
    assert_int_equal(mt_tok_train_corpora(specs, 1, &o, NULL, &t, NULL), MT_OK);
    static const char *const vocab[] = {"[PAD]", "[UNK]", "[SOS]", "[EOS]", "the", ".", "cat", "a"};
    assert_int_equal(mt_tok_vocab_size(t), 8);
    for (int32_t i = 0; i < 8; i++) assert_int_equal(mt_tok_token_to_id(t, vocab[i], strlen(vocab[i])), i);
    mt_ids ids = {0};
    assert_int_equal(mt_tok_encode(t, "the dog sat.", 12, &ids), MT_OK);
    int32_t want[] = {4, 1, 1, 5};
    assert_int_equal(ids.n, 4);
    assert_memory_equal(ids.v, want, sizeof want);
    mt_buf b = {0};
    assert_int_equal(mt_tok_decode(t, ids.v, ids.n, &b), MT_OK);
    assert_string_equal(b.p, "the .");
    mt_buf_free(&b);
    mt_ids_free(&ids);
    mt_tok_free(t);
}

static const char *CORPUS =
    "Hello, world!\tCiao, mondo!\n"
    "I'm 12 years old.\tHo 12 anni.\n"
    "Where is the station?\tDov'\xC3\xA8 la stazione?\n"
    "The cat sleeps on the mat.\tIl gatto dorme sul tappeto.\n"
    "\"Really?\" she asked.\t\xC2\xAB" "Davvero?\xC2\xBB chiese lei.\n"
    "It costs 3,50 euros - or 4.\tCosta 3,50 euro - o 4.\n"
    "Why?  Because!\tPerch\xC3\xA9?  Perch\xC3\xA9!\n";

static mt_tokenizer *train_small(int vocab) {
    char path[1024];
    write_corpus(path, CORPUS);
    mt_tok_train_options o;
    mt_tok_train_options_default(&o, MT_TOK_BPE);
    o.vocab_size = (size_t)vocab;
    o.min_frequency = 1;
    const char *specs[] = {path};
    mt_tokenizer *t = NULL;
    assert_int_equal(mt_tok_train_corpora(specs, 1, &o, NULL, &t, NULL), MT_OK);
    return t;
}

static void test_lossless_roundtrip(void **state) {
    (void)state;
    mt_tokenizer *t = train_small(120);
    mt_tok_specials sp = mt_tok_get_specials(t);
    assert_int_equal(sp.pad, 0);
    assert_int_equal(sp.unk, 1);
    assert_int_equal(sp.sos, 2);
    assert_int_equal(sp.eos, 3);
    assert_int_equal(mt_tok_vocab_size(t), 120);
    static const char *const texts[] = {
        "Hello, world!", "Dov'\xC3\xA8 la stazione?", "Why?  Because!", "I'm 12 years old. ", "\xC2\xAB" "Davvero?\xC2\xBB",
        "mat.cat,sat", "a  s   c", "3,50 - 4", "",
    };
    mt_ids ids = {0};
    mt_buf b = {0};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        ids.n = 0;
        assert_int_equal(mt_tok_encode(t, texts[i], strlen(texts[i]), &ids), MT_OK);
        for (size_t k = 0; k < ids.n; k++)
            if (ids.v[k] == sp.unk) fail_msg("[UNK] in \"%s\" at %zu", texts[i], k);
        assert_int_equal(mt_tok_decode(t, ids.v, ids.n, &b), MT_OK);
        assert_string_equal(b.p, texts[i]);
    }
    /* NFKC applies (ﬁ -> fi is not in the alphabet: only f and i are) and unknown characters are
     * [UNK], dropped on decode */
    ids.n = 0;
    assert_int_equal(mt_tok_encode(t, "\xE2\x80\xA6 \xE4\xBD\xA0", 7, &ids), MT_OK); /* … 你 */
    assert_int_equal(mt_tok_decode(t, ids.v, ids.n, &b), MT_OK);
    assert_string_equal(b.p, "... "); /* … -> ..., 你 -> [UNK] */
    /* [SOS]/[EOS]/[PAD] around ids are dropped */
    int32_t framed[64];
    ids.n = 0;
    assert_int_equal(mt_tok_encode(t, "Hello, world!", 13, &ids), MT_OK);
    framed[0] = sp.sos;
    memcpy(framed + 1, ids.v, ids.n * sizeof *ids.v);
    framed[ids.n + 1] = sp.eos;
    framed[ids.n + 2] = sp.pad;
    assert_int_equal(mt_tok_decode(t, framed, ids.n + 3, &b), MT_OK);
    assert_string_equal(b.p, "Hello, world!");
    /* invalid UTF-8 is an error naming the offset */
    assert_int_equal(mt_tok_encode(t, "ab\xC3(", 4, &ids), MT_ERR_UTF8);
    assert_non_null(strstr(mt_last_error(), "byte 2"));
    mt_buf_free(&b);
    mt_ids_free(&ids);
    mt_tok_free(t);
}

static void test_json_roundtrip(void **state) {
    (void)state;
    mt_tokenizer *t = train_small(100);
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(mt_tok_to_json(t, &json, &len), MT_OK);
    assert_int_equal(strlen(json), len);
    mt_tokenizer *t2 = NULL;
    assert_int_equal(mt_tok_load_json(json, len, "memory", &t2), MT_OK);
    char *json2 = NULL;
    assert_int_equal(mt_tok_to_json(t2, &json2, NULL), MT_OK);
    assert_string_equal(json, json2);
    /* the file functions too, .zst included */
    char p[1024], z[1024];
    tt_path(p, sizeof p, dir, "tok.json");
    tt_path(z, sizeof z, dir, "tok.json.zst");
    assert_int_equal(mt_tok_save_file(t, p), MT_OK);
    assert_int_equal(mt_tok_save_file(t, z), MT_OK);
    mt_tokenizer *t3 = NULL, *t4 = NULL;
    assert_int_equal(mt_tok_load_file(p, &t3), MT_OK);
    assert_int_equal(mt_tok_load_file(z, &t4), MT_OK);
    const char *s = "The station? Ciao, mondo! 12 anni.";
    mt_ids a = {0}, b = {0}, c = {0}, d = {0};
    assert_int_equal(mt_tok_encode(t, s, strlen(s), &a), MT_OK);
    assert_int_equal(mt_tok_encode(t2, s, strlen(s), &b), MT_OK);
    assert_int_equal(mt_tok_encode(t3, s, strlen(s), &c), MT_OK);
    assert_int_equal(mt_tok_encode(t4, s, strlen(s), &d), MT_OK);
    assert_int_equal(a.n, b.n);
    assert_int_equal(a.n, c.n);
    assert_int_equal(a.n, d.n);
    assert_memory_equal(a.v, b.v, a.n * 4);
    assert_memory_equal(a.v, c.v, a.n * 4);
    assert_memory_equal(a.v, d.v, a.n * 4);
    mt_ids_free(&a);
    mt_ids_free(&b);
    mt_ids_free(&c);
    mt_ids_free(&d);
    mt_sys_free(json);
    mt_sys_free(json2);
    mt_tok_free(t);
    mt_tok_free(t2);
    mt_tok_free(t3);
    mt_tok_free(t4);
}

static void expect_load_error(const char *json, mt_status want, const char *const *needles) {
    mt_tokenizer *t = NULL;
    assert_int_equal(mt_tok_load_json(json, strlen(json), "bad.json", &t), want);
    assert_null(t);
    for (size_t i = 0; needles[i]; i++) {
        if (!strstr(mt_last_error(), needles[i])) fprintf(stderr, "message: %s\n", mt_last_error());
        assert_non_null(strstr(mt_last_error(), needles[i]));
    }
}

static void test_json_errors(void **state) {
    (void)state;
    const char *wl = "\"model\":{\"type\":\"WordLevel\",\"vocab\":{\"a\":0},\"unk_token\":\"a\"}";
    char j[1024];
    snprintf(j, sizeof j, "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"BertNormalizer\"}]},%s}", wl);
    expect_load_error(j, MT_ERR_UNSUPPORTED, (const char *[]){"bad.json", "normalizer.normalizers[1]", "BertNormalizer", NULL});
    snprintf(j, sizeof j, "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"behavior\":\"Removed\"},%s}", wl);
    expect_load_error(j, MT_ERR_UNSUPPORTED, (const char *[]){"pre_tokenizer", "Regex", NULL});
    snprintf(j, sizeof j, "{\"pre_tokenizer\":{\"type\":\"UnicodeScripts\"},%s}", wl);
    expect_load_error(j, MT_ERR_UNSUPPORTED, (const char *[]){"pre_tokenizer", "UnicodeScripts", NULL});
    snprintf(j, sizeof j, "{\"decoder\":{\"type\":\"CTC\"},%s}", wl);
    expect_load_error(j, MT_ERR_UNSUPPORTED, (const char *[]){"decoder", "CTC", NULL});
    expect_load_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", MT_ERR_UNSUPPORTED, (const char *[]){"model.type", "Unigram", NULL});
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[[\"a\",\"c\"]]}}", MT_ERR_FORMAT,
                      (const char *[]){"model.merges[0]", "\"c\"", NULL});
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[[\"a\",\"b\"]]}}", MT_ERR_FORMAT,
                      (const char *[]){"model.merges[0]", "\"ab\"", NULL}); /* the merged token is missing */
    expect_load_error("{\"model\":{\"type\":\"BPE\",\"dropout\":0.1,\"vocab\":{\"a\":0},\"merges\":[]}}", MT_ERR_UNSUPPORTED,
                      (const char *[]){"dropout", NULL});
    expect_load_error("{\"model\":{\"type\":\"BPE\",\n\"vocab\":{\"a\":0,}}}", MT_ERR_FORMAT, (const char *[]){"bad.json", "line 2", NULL});
    expect_load_error("{\"version\":\"1.0\"}", MT_ERR_FORMAT, (const char *[]){"model", "missing", NULL});
    mt_tokenizer *t = NULL;
    char p[1024];
    tt_path(p, sizeof p, dir, "nope.json");
    assert_int_equal(mt_tok_load_file(p, &t), MT_ERR_NOT_FOUND);
    assert_non_null(strstr(mt_last_error(), "nope.json"));
}

static void test_abi(void **state) {
    (void)state;
    char path[1024];
    write_corpus(path, CORPUS);
    const char *paths[] = {path};
    mt_tokenizer_t *t = NULL;
    assert_int_equal(mt_tokenizer_train(paths, 1, "{\"model\":\"bpe\",\"vocab_size\":90,\"min_frequency\":1}", &t), MT_OK);
    size_t vs = 0;
    assert_int_equal(mt_tokenizer_vocab_size(t, &vs), MT_OK);
    assert_int_equal(vs, 90);
    int32_t id = -1;
    assert_int_equal(mt_tokenizer_token_to_id(t, "[EOS]", &id), MT_OK);
    assert_int_equal(id, 3);
    assert_int_equal(mt_tokenizer_token_to_id(t, "no such token", &id), MT_ERR_NOT_FOUND);
    int32_t ids[64];
    size_t n = 0;
    assert_int_equal(mt_tokenizer_encode(t, "Hello, world!", ids, 64, &n), MT_OK);
    assert_true(n >= 3);
    size_t n2 = 0;
    int32_t small[2] = {-7, -7};
    assert_int_equal(mt_tokenizer_encode(t, "Hello, world!", small, 2, &n2), MT_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(n2, n);
    assert_int_equal(small[0], -7); /* nothing written */
    char buf[64];
    size_t len = 0;
    assert_int_equal(mt_tokenizer_decode(t, ids, n, buf, sizeof buf, &len), MT_OK);
    assert_string_equal(buf, "Hello, world!");
    assert_int_equal(len, 13);
    assert_int_equal(mt_tokenizer_decode(t, ids, n, buf, 13, &len), MT_ERR_BUFFER_TOO_SMALL); /* no room for the NUL */
    assert_int_equal(len, 13);
    char p[1024];
    tt_path(p, sizeof p, dir, "abi.json");
    assert_int_equal(mt_tokenizer_save(t, p), MT_OK);
    mt_tokenizer_t *t2 = NULL;
    assert_int_equal(mt_tokenizer_load(p, &t2), MT_OK);
    int32_t ids2[64];
    assert_int_equal(mt_tokenizer_encode(t2, "Hello, world!", ids2, 64, &n2), MT_OK);
    assert_int_equal(n2, n);
    assert_memory_equal(ids, ids2, n * 4);
    mt_tokenizer_free(t2);
    mt_tokenizer_free(t);
    mt_tokenizer_free(NULL);
    /* options errors name the key */
    assert_int_equal(mt_tokenizer_train(paths, 1, "{\"vocab_sise\":100}", &t), MT_ERR_CONFIG);
    assert_non_null(strstr(mt_last_error(), "vocab_sise"));
    assert_int_equal(mt_tokenizer_train(paths, 1, "{\"model\":\"unigram\"}", &t), MT_ERR_CONFIG);
    assert_non_null(strstr(mt_last_error(), "model"));
    assert_int_equal(mt_tokenizer_train(paths, 1, "{\"vocab_size\":\"big\"}", &t), MT_ERR_CONFIG);
    assert_non_null(strstr(mt_last_error(), "vocab_size"));
    assert_int_equal(mt_tokenizer_train(paths, 1, "{\"model\":\"wordlevel\",\"min_frequency\":1,\"lowercase\":true}", &t), MT_OK);
    assert_int_equal(mt_tokenizer_encode(t, "HELLO", ids, 64, &n), MT_OK);
    assert_int_equal(n, 1);
    assert_int_equal(mt_tokenizer_token_to_id(t, "hello", &id), MT_OK);
    assert_int_equal(ids[0], id);
    mt_tokenizer_free(t);
    assert_int_equal(mt_tokenizer_encode(NULL, "x", ids, 64, &n), MT_ERR_INVALID_ARG);
}

typedef struct thread_job {
    const mt_tokenizer *tok;
    const char *const *texts;
    size_t n;
    int32_t *out; /* concatenated ids */
    size_t out_n;
    int rc;
} thread_job;

static void *encode_all(void *arg) {
    thread_job *j = arg;
    mt_ids ids = {0};
    for (int rep = 0; rep < 50; rep++) {
        ids.n = 0;
        for (size_t i = 0; i < j->n; i++)
            if (mt_tok_encode(j->tok, j->texts[i], strlen(j->texts[i]), &ids) != MT_OK) j->rc = 1;
    }
    j->out = malloc(ids.n * sizeof *j->out + 1);
    memcpy(j->out, ids.v, ids.n * sizeof *ids.v);
    j->out_n = ids.n;
    mt_ids_free(&ids);
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    mt_tokenizer *t = train_small(150);
    static const char *const texts[] = {"Hello, world!", "Where is the station?", "Il gatto dorme sul tappeto.",
                                        "Perch\xC3\xA9?  Perch\xC3\xA9!", "It costs 3,50 euros - or 4.", "the cat the mat"};
    thread_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){t, texts, 6, NULL, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, encode_all, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    /* a fresh tokenizer (empty cache), one thread: the reference */
    mt_tokenizer *t2 = train_small(150);
    thread_job ref = {t2, texts, 6, NULL, 0, 0};
    encode_all(&ref);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(jobs[i].rc, 0);
        assert_int_equal(jobs[i].out_n, ref.out_n);
        assert_memory_equal(jobs[i].out, ref.out, ref.out_n * 4);
        free(jobs[i].out);
    }
    free(ref.out);
    mt_tok_free(t);
    mt_tok_free(t2);
}

static int setup(void **state) {
    (void)state;
    return tt_mkdtemp(dir, sizeof dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tt_rmdir(dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bpe_merge_priority), cmocka_unit_test(test_fuse_unk_and_byte_fallback),
        cmocka_unit_test(test_split_behaviours),   cmocka_unit_test(test_pre_tokenizers),
        cmocka_unit_test(test_normalizers),        cmocka_unit_test(test_decoders),
        cmocka_unit_test(test_added_tokens),       cmocka_unit_test(test_train_bpe_by_hand),
        cmocka_unit_test(test_train_wordlevel_by_hand), cmocka_unit_test(test_lossless_roundtrip),
        cmocka_unit_test(test_json_roundtrip),     cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_abi),                cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
