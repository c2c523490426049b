/*
 * test_hf_tokenizers.c — identity with Hugging Face `tokenizers` on the whole Tatoeba corpus (both
 * sides, 38k sentences) from $MT_DATA_DIR:
 *   - a tokenizer trained by `tokenizers` with MicroTensor's settings loads here and gives the same
 *     ids for every sentence; ours, saved, loads there and gives the same ids; decoding agrees;
 *   - our trainer produces the same tokenizer.json model (vocabulary, ids, merges in order);
 * for BPE (Metaspace pipeline), byte-level BPE and WordLevel (Whitespace, min_frequency); and the
 * character classes and normalizers underneath, over every assigned code point.
 * Skips (77) without the data or without a Python that imports `tokenizers`.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "io/io.h"
#include "text/corpus.h"
#include "text/tokenizer.h"
#include "text/unicode.h"
#include "text_test.h"

static char dir[512];
static char tatoeba[1024];
static char sents[1024];
static const char *python;
static size_t n_sents;

static int py(const char *args) {
    return tt_system("'%s' '%s/tests/text/hf_tokenizers_ref.py' %s", python, tt_source_dir(), args);
}

/* Lines of two files that differ (both must have the same number of lines). */
static size_t diff_lines(const char *a, const char *b, const char *what) {
    mt_reader *ra = NULL, *rb = NULL;
    assert_int_equal(mt_reader_open(a, &ra), MT_OK);
    assert_int_equal(mt_reader_open(b, &rb), MT_OK);
    size_t diffs = 0, n = 0;
    for (;;) {
        const char *la = NULL, *lb = NULL;
        size_t na = 0, nb = 0;
        assert_int_equal(mt_reader_line(ra, &la, &na), MT_OK);
        assert_int_equal(mt_reader_line(rb, &lb, &nb), MT_OK);
        if (!la || !lb) {
            assert_true(!la && !lb);
            break;
        }
        n++;
        if (na != nb || memcmp(la, lb, na) != 0) {
            if (diffs++ < 3) printf("%s differs at line %zu:\n  ours: %s\n  HF:   %s\n", what, n, la, lb);
        }
    }
    mt_reader_close(ra);
    mt_reader_close(rb);
    printf("%s: %zu lines, %zu differ\n", what, n, diffs);
    return diffs;
}

static void encode_file(const mt_tokenizer *tok, const char *in, const char *out) {
    mt_reader *r = NULL;
    assert_int_equal(mt_reader_open(in, &r), MT_OK);
    FILE *f = fopen(out, "w");
    mt_tok_encoder *e = NULL;
    assert_int_equal(mt_tok_encoder_new(tok, &e), MT_OK);
    mt_ids ids = {0};
    for (;;) {
        const char *l = NULL;
        size_t n = 0;
        assert_int_equal(mt_reader_line(r, &l, &n), MT_OK);
        if (!l) break;
        ids.n = 0;
        assert_int_equal(mt_tok_encoder_encode(e, l, n, &ids), MT_OK);
        for (size_t i = 0; i < ids.n; i++) fprintf(f, i ? " %d" : "%d", ids.v[i]);
        fputc('\n', f);
    }
    fclose(f);
    mt_ids_free(&ids);
    mt_tok_encoder_free(e);
    mt_reader_close(r);
}

static void decode_file(const mt_tokenizer *tok, const char *in, const char *out) {
    mt_reader *r = NULL;
    assert_int_equal(mt_reader_open(in, &r), MT_OK);
    FILE *f = fopen(out, "w");
    mt_ids ids = {0};
    mt_buf b = {0};
    for (;;) {
        const char *l = NULL;
        size_t n = 0;
        assert_int_equal(mt_reader_line(r, &l, &n), MT_OK);
        if (!l) break;
        ids.n = 0;
        for (const char *p = l; *p;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) break;
            assert_int_equal(mt_ids_push(&ids, (int32_t)v), MT_OK);
            p = end;
        }
        assert_int_equal(mt_tok_decode(tok, ids.v, ids.n, &b), MT_OK);
        fprintf(f, "%s\n", b.p);
    }
    fclose(f);
    mt_buf_free(&b);
    mt_ids_free(&ids);
    mt_reader_close(r);
}

/* Our tokenizer trained on the sentences with the options matching `kind` of the script. */
static mt_tokenizer *train_ours(const char *kind, size_t vocab, uint64_t minfreq) {
    mt_tok_train_options o;
    mt_tok_train_options_default(&o, strcmp(kind, "wordlevel") ? MT_TOK_BPE : MT_TOK_WORDLEVEL);
    if (!strcmp(kind, "bytelevel")) o.pre_tokenizer = "bytelevel";
    o.vocab_size = vocab;
    o.min_frequency = minfreq;
    mt_tok_trainer *t = NULL;
    assert_int_equal(mt_tok_trainer_new(&o, &t), MT_OK);
    mt_reader *r = NULL;
    assert_int_equal(mt_reader_open(sents, &r), MT_OK);
    for (;;) {
        const char *l = NULL;
        size_t n = 0;
        assert_int_equal(mt_reader_line(r, &l, &n), MT_OK);
        if (!l) break;
        assert_int_equal(mt_tok_trainer_feed(t, l, n), MT_OK);
    }
    mt_reader_close(r);
    mt_tokenizer *tok = NULL;
    assert_int_equal(mt_tok_trainer_finish(t, &tok), MT_OK);
    return tok;
}

static void identity(const char *kind, size_t vocab, uint64_t minfreq) {
    char hf_json[1024], ours_json[1024], ids_hf[1024], ids_ours[1024], ids_ours2[1024], ids_hf2[1024];
    char dec_ours[1024], dec_hf[1024], args[8192], name[64];
    snprintf(name, sizeof name, "hf_%s.json", kind);
    tt_path(hf_json, sizeof hf_json, dir, name);
    snprintf(name, sizeof name, "ours_%s.json", kind);
    tt_path(ours_json, sizeof ours_json, dir, name);
    tt_path(ids_hf, sizeof ids_hf, dir, "ids_hf.txt");
    tt_path(ids_ours, sizeof ids_ours, dir, "ids_ours.txt");
    tt_path(ids_ours2, sizeof ids_ours2, dir, "ids_ours2.txt");
    tt_path(ids_hf2, sizeof ids_hf2, dir, "ids_hf2.txt");
    tt_path(dec_ours, sizeof dec_ours, dir, "dec_ours.txt");
    tt_path(dec_hf, sizeof dec_hf, dir, "dec_hf.txt");

    /* 1. trained by `tokenizers`, loaded here: the same ids on the whole corpus */
    snprintf(args, sizeof args, "train %s '%s' '%s' %zu %llu", kind, hf_json, sents, vocab, (unsigned long long)minfreq);
    assert_int_equal(py(args), 0);
    mt_tokenizer *hf = NULL;
    assert_int_equal(mt_tok_load_file(hf_json, &hf), MT_OK);
    encode_file(hf, sents, ids_ours);
    snprintf(args, sizeof args, "encode '%s' '%s' '%s'", hf_json, sents, ids_hf);
    assert_int_equal(py(args), 0);
    char what[128];
    snprintf(what, sizeof what, "%s: ids of the HF-trained tokenizer, here vs HF", kind);
    assert_int_equal(diff_lines(ids_ours, ids_hf, what), 0);

    /* 2. trained here: the same tokenizer.json model and pipeline */
    mt_tokenizer *ours = train_ours(kind, vocab, minfreq);
    assert_int_equal(mt_tok_save_file(ours, ours_json), MT_OK);
    json_error_t err;
    json_t *a = json_load_file(hf_json, 0, &err), *b = json_load_file(ours_json, 0, &err);
    assert_non_null(a);
    assert_non_null(b);
    static const char *const keys[] = {"added_tokens", "normalizer", "pre_tokenizer", "decoder", "model"};
    for (size_t k = 0; k < 5; k++) {
        int eq = json_equal(json_object_get(a, keys[k]), json_object_get(b, keys[k]));
        if (!eq) printf("%s: \"%s\" differs between our trainer and HF's\n", kind, keys[k]);
        assert_true(eq);
    }
    json_t *model = json_object_get(b, "model");
    printf("%s: trained here == trained by HF (%zu tokens, %zu merges)\n", kind, json_object_size(json_object_get(model, "vocab")),
           json_array_size(json_object_get(model, "merges")));
    json_decref(a);
    json_decref(b);

    /* 3. ours, loaded by `tokenizers`: the same ids; decoding agrees */
    encode_file(ours, sents, ids_ours2);
    snprintf(args, sizeof args, "encode '%s' '%s' '%s'", ours_json, sents, ids_hf2);
    assert_int_equal(py(args), 0);
    snprintf(what, sizeof what, "%s: ids of our tokenizer, here vs HF", kind);
    assert_int_equal(diff_lines(ids_ours2, ids_hf2, what), 0);
    decode_file(ours, ids_ours2, dec_ours);
    snprintf(args, sizeof args, "decode '%s' '%s' '%s'", ours_json, ids_ours2, dec_hf);
    assert_int_equal(py(args), 0);
    snprintf(what, sizeof what, "%s: decoded text, here vs HF", kind);
    assert_int_equal(diff_lines(dec_ours, dec_hf, what), 0);

    /* 4. BPE decodes back to the normalized input (lossless); word-level cannot (spaces) */
    if (strcmp(kind, "wordlevel") != 0) {
        mt_reader *rs = NULL, *rd = NULL;
        assert_int_equal(mt_reader_open(sents, &rs), MT_OK);
        assert_int_equal(mt_reader_open(dec_ours, &rd), MT_OK);
        mt_buf nb = {0};
        size_t lossy = 0, n = 0;
        for (;;) {
            const char *s = NULL, *d = NULL;
            size_t sl = 0, dl = 0;
            assert_int_equal(mt_reader_line(rs, &s, &sl), MT_OK);
            assert_int_equal(mt_reader_line(rd, &d, &dl), MT_OK);
            if (!s) break;
            n++;
            assert_int_equal(mt_tok_normalize(ours, s, sl, &nb), MT_OK);
            if (nb.n != dl || memcmp(nb.p, d, dl) != 0) lossy++;
        }
        printf("%s: decode(encode(s)) == NFKC(s) for %zu of %zu sentences\n", kind, n - lossy, n);
        assert_int_equal(lossy, 0);
        mt_buf_free(&nb);
        mt_reader_close(rs);
        mt_reader_close(rd);
    }
    mt_tok_free(hf);
    mt_tok_free(ours);
}

static void test_bpe(void **state) {
    (void)state;
    identity("bpe", 8000, 2);
}

static void test_bytelevel(void **state) {
    (void)state;
    identity("bytelevel", 4000, 2);
}

static void test_wordlevel(void **state) {
    (void)state;
    identity("wordlevel", 30000, 2);
}

static void test_char_classes(void **state) {
    (void)state;
    char out[1024], args[2048];
    tt_path(out, sizeof out, dir, "classes.txt");
    snprintf(args, sizeof args, "classes '%s'", out);
    assert_int_equal(py(args), 0);
    FILE *f = fopen(out, "r");
    char line[128], fl[32];
    unsigned cp;
    size_t n = 0, bad = 0;
    static const char letters[] = "wspnLNS";
    while (fgets(line, sizeof line, f)) {
        fl[0] = '\0';
        if (sscanf(line, "%x %31s", &cp, fl) < 1) continue;
        n++;
        unsigned u = mt_uc_flags(cp);
        int ours[7] = {!!(u & MT_UC_WORD), !!(u & MT_UC_SPACE), !!(u & MT_UC_PUNCT), !!(u & MT_UC_NUMERIC),
                       !!(u & MT_UC_LETTER), !!(u & MT_UC_NUMERIC), !!(u & MT_UC_SPACE)};
        for (int k = 0; k < 7; k++) {
            if (k == 6 && cp == 0x20) continue; /* the probe "a  b" pairs its last space with b: not a class */
            int hf = strchr(fl, letters[k]) != NULL;
            if (hf != ours[k] && bad++ < 10) printf("U+%04X class %c: HF %d, ours %d\n", cp, letters[k], hf, ours[k]);
        }
    }
    fclose(f);
    printf("character classes: %zu code points, %zu differences\n", n, bad);
    assert_true(n > 100000);
    assert_int_equal(bad, 0);
}

static void cps_hex(const char *s, size_t n, char *out, size_t cap) {
    out[0] = '\0';
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t k = mt_utf8_decode(s + i, n - i, &cp);
        if (!k) k = 1;
        char h[16];
        snprintf(h, sizeof h, "%s%x", out[0] ? "." : "", cp);
        strncat(out, h, cap - strlen(out) - 1);
        i += k;
    }
    if (!out[0]) snprintf(out, cap, "-");
}

static void test_normalizers(void **state) {
    (void)state;
    char out[1024], args[2048];
    tt_path(out, sizeof out, dir, "norm.txt");
    snprintf(args, sizeof args, "normalize '%s'", out);
    assert_int_equal(py(args), 0);
    static const char *const norms[3] = {"{\"type\":\"NFKC\"}", "{\"type\":\"NFC\"}", "{\"type\":\"Lowercase\"}"};
    mt_tokenizer *tok[3];
    for (int k = 0; k < 3; k++) {
        char j[512];
        snprintf(j, sizeof j, "{\"normalizer\":%s,\"model\":{\"type\":\"WordLevel\",\"vocab\":{\"a\":0},\"unk_token\":\"a\"}}", norms[k]);
        assert_int_equal(mt_tok_load_json(j, strlen(j), "test", &tok[k]), MT_OK);
    }
    FILE *f = fopen(out, "r");
    char line[1024], want[3][300], got[300];
    unsigned cp;
    size_t n = 0, bad = 0;
    mt_buf b = {0};
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%x %299s %299s %299s", &cp, want[0], want[1], want[2]) != 4) continue;
        n++;
        char s[4];
        size_t sl = mt_utf8_encode(cp, s);
        for (int k = 0; k < 3; k++) {
            assert_int_equal(mt_tok_normalize(tok[k], s, sl, &b), MT_OK);
            cps_hex(b.p, b.n, got, sizeof got);
            if (strcmp(got, want[k]) != 0 && bad++ < 10)
                printf("U+%04X %s: HF %s, ours %s\n", cp, k == 0 ? "NFKC" : k == 1 ? "NFC" : "Lowercase", want[k], got);
        }
    }
    fclose(f);
    mt_buf_free(&b);
    for (int k = 0; k < 3; k++) mt_tok_free(tok[k]);
    printf("normalizers NFKC, NFC, Lowercase: %zu code points, %zu differences\n", n, bad);
    assert_true(n > 100000);
    assert_int_equal(bad, 0);
}

int main(void) {
    if (!tt_data_file("tatoeba.en-it.tsv.zst", tatoeba, sizeof tatoeba)) {
        printf("SKIP: %s is not here (set MT_DATA_DIR to the corpora's directory)\n", tatoeba);
        return TT_SKIP;
    }
    if (!(python = tt_python_with("tokenizers"))) {
        printf("SKIP: no Python with the `tokenizers` package ($MT_TORCH_PYTHON or /usr/bin/python3); "
               "deploy/install-deps.sh installs it where PyPI is reachable\n");
        return TT_SKIP;
    }
    if (!tt_mkdtemp(dir, sizeof dir)) return 1;
    /* both sides of every pair, one sentence per line, as the corpus reader gives them */
    tt_path(sents, sizeof sents, dir, "sentences.txt");
    mt_corpus *c = NULL;
    if (mt_corpus_open(tatoeba, NULL, &c) != MT_OK) {
        printf("cannot read %s: %s\n", tatoeba, mt_last_error());
        return 1;
    }
    FILE *f = fopen(sents, "w");
    for (;;) {
        mt_pair p;
        int got = 0;
        if (mt_corpus_next(c, &p, &got) != MT_OK) {
            printf("%s\n", mt_last_error());
            return 1;
        }
        if (!got) break;
        fprintf(f, "%s\n%s\n", p.src, p.tgt);
        n_sents += 2;
    }
    fclose(f);
    mt_corpus_close(c);
    printf("corpus: %s, %zu sentences\n", tatoeba, n_sents);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_char_classes), cmocka_unit_test(test_normalizers), cmocka_unit_test(test_bpe),
        cmocka_unit_test(test_bytelevel),    cmocka_unit_test(test_wordlevel),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tt_rmdir(dir);
    return rc;
}
