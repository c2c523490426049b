/*
 * bench_tokenizer.c — `mt-bench tokenizer`: BPE training time and encode throughput on the real
 * corpora of $MT_DATA_DIR (tatoeba + europarl, 76k pairs, both sides).
 *
 *   mt-bench tokenizer [--data DIR] [--vocab 16000] [--no-hf]
 *
 * Figures, each against an anchor measured in the same run:
 *   train_s      training a joint BPE vocabulary from the corpus files (reading and zstd included),
 *                against the 60 s target and against `tokenizers`' BpeTrainer on the same sentences
 *                (Python, all its threads) when it is installed;
 *   encode MB/s  encoding every sentence on one core (cold: empty word cache; warm: the steady state
 *                of encoding a corpus), against a bare scan of the same bytes (UTF-8 validation and
 *                whitespace splitting, a floor no tokenizer beats) and against `tokenizers`
 *                encode_batch limited to one thread (RAYON_NUM_THREADS=1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "core/alloc.h"
#include "io/io.h"
#include "text/corpus.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

static int file_ok(const char *p) { return access(p, R_OK) == 0; }

/* The floor: validate UTF-8 and count words of every sentence. */
static size_t scan(const mt_pairs *p) {
    size_t words = 0;
    for (size_t i = 0; i < p->n; i++) {
        for (int side = 0; side < 2; side++) {
            const char *s = side ? mt_pairs_tgt(p, i) : mt_pairs_src(p, i);
            size_t n = side ? p->tgt_len[i] : p->src_len[i];
            words += mt_utf8_valid(s, n, NULL);
            int in = 0;
            for (size_t k = 0; k < n; k++) {
                int sp = (mt_uc_ascii_flags[(unsigned char)s[k] & 0x7F] & MT_UC_SPACE) != 0;
                words += !sp && !in;
                in = !sp;
            }
        }
    }
    return words;
}

static int encode_all(const mt_tokenizer *tok, const mt_pairs *p, size_t *n_ids) {
    mt_tok_encoder *e = NULL;
    if (mt_tok_encoder_new(tok, &e) != MT_OK) return -1;
    mt_ids ids = {0};
    *n_ids = 0;
    for (size_t i = 0; i < p->n; i++) {
        ids.n = 0;
        if (mt_tok_encoder_encode(e, mt_pairs_src(p, i), p->src_len[i], &ids) != MT_OK ||
            mt_tok_encoder_encode(e, mt_pairs_tgt(p, i), p->tgt_len[i], &ids) != MT_OK) {
            fprintf(stderr, "mt-bench tokenizer: encode: %s\n", mt_last_error());
            mt_tok_encoder_free(e);
            mt_ids_free(&ids);
            return -1;
        }
        *n_ids += ids.n;
    }
    mt_ids_free(&ids);
    mt_tok_encoder_free(e);
    return 0;
}

/* `tokenizers` on the same sentences: training (all threads) and one-thread encoding times. */
static int hf_anchor(const char *py, const char *dir, const mt_pairs *p, size_t vocab, double *train_s, double *enc_s) {
    char sents[1024], script[1024], out[1024], cmd[4096];
    snprintf(sents, sizeof sents, "%s/sentences.txt", dir);
    snprintf(script, sizeof script, "%s/hf_bench.py", dir);
    snprintf(out, sizeof out, "%s/hf_times.txt", dir);
    FILE *f = fopen(sents, "w");
    if (!f) return -1;
    for (size_t i = 0; i < p->n; i++) fprintf(f, "%s\n%s\n", mt_pairs_src(p, i), mt_pairs_tgt(p, i));
    fclose(f);
    f = fopen(script, "w");
    if (!f) return -1;
    fprintf(f,
            "import sys, time\n"
            "from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, decoders, trainers\n"
            "lines = open(sys.argv[1], encoding='utf-8', newline='').read().split('\\n')[:-1]\n"
            "tok = Tokenizer(models.BPE(unk_token='[UNK]'))\n"
            "tok.normalizer = normalizers.NFKC()\n"
            "tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(replacement='\\u2581', "
            "prepend_scheme='always', split=True), pre_tokenizers.Punctuation(), pre_tokenizers.Digits()])\n"
            "tok.decoder = decoders.Metaspace()\n"
            "tr = trainers.BpeTrainer(vocab_size=int(sys.argv[2]), min_frequency=2, "
            "special_tokens=['[PAD]', '[UNK]', '[SOS]', '[EOS]'], show_progress=False)\n"
            "t = time.perf_counter(); tok.train_from_iterator(lines, tr); t1 = time.perf_counter() - t\n"
            "t = time.perf_counter(); tok.encode_batch(lines, add_special_tokens=False); t2 = time.perf_counter() - t\n"
            "open(sys.argv[3], 'w').write('%%f %%f' %% (t1, t2))\n");
    fclose(f);
    /* training uses every thread as the package does by default; encoding is limited to one */
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' %zu '%s' >/dev/null 2>&1", py, script, sents, vocab, out);
    if (system(cmd) != 0) return -1;
    f = fopen(out, "r");
    double t1 = 0, t2 = 0;
    int ok = f && fscanf(f, "%lf %lf", &t1, &t2) == 2;
    if (f) fclose(f);
    snprintf(cmd, sizeof cmd, "RAYON_NUM_THREADS=1 '%s' '%s' '%s' %zu '%s' >/dev/null 2>&1", py, script, sents, vocab, out);
    double e1 = 0, e2 = 0;
    if (ok && system(cmd) == 0 && (f = fopen(out, "r"))) {
        ok = fscanf(f, "%lf %lf", &e1, &e2) == 2;
        fclose(f);
    }
    unlink(sents);
    unlink(script);
    unlink(out);
    if (!ok) return -1;
    *train_s = t1;
    *enc_s = e2;
    return 0;
}

int mt_bench_tokenizer(int argc, char **argv) {
    const char *data = mt_data_dir();
    size_t vocab = 16000;
    int use_hf = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--vocab") && i + 1 < argc) vocab = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--no-hf")) use_hf = 0;
        else {
            fprintf(stderr, "usage: mt-bench tokenizer [--data DIR] [--vocab N] [--no-hf]\n");
            return 2;
        }
    }
    char t1[1024], t2[1024];
    snprintf(t1, sizeof t1, "%s/tatoeba.en-it.tsv.zst", data);
    snprintf(t2, sizeof t2, "%s/europarl-v7-lowercased.en-it.tsv.zst", data);
    if (!file_ok(t1) || !file_ok(t2)) {
        fprintf(stderr, "mt-bench tokenizer: the corpora are not in %s (--data or MT_DATA_DIR)\n", data);
        return 2;
    }
    const char *specs[] = {t1, t2};

    /* training, from the files */
    mt_tok_train_options o;
    mt_tok_train_options_default(&o, MT_TOK_BPE);
    o.vocab_size = vocab;
    mt_tokenizer *tok = NULL;
    mt_corpus_summary sum;
    double t0 = mt_bench_now();
    if (mt_tok_train_corpora(specs, 2, &o, NULL, &tok, &sum) != MT_OK) {
        fprintf(stderr, "mt-bench tokenizer: training: %s\n", mt_last_error());
        return 1;
    }
    double train_s = mt_bench_now() - t0;

    mt_pairs *p = NULL;
    if (mt_pairs_read(specs, 2, NULL, &p, NULL) != MT_OK) {
        fprintf(stderr, "mt-bench tokenizer: %s\n", mt_last_error());
        mt_tok_free(tok);
        return 1;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < p->n; i++) bytes += p->src_len[i] + p->tgt_len[i];
    double mb = (double)bytes / 1e6;

    /* anchor: the scan floor (best of 3) */
    double scan_s = 1e30;
    volatile size_t sink = 0;
    for (int r = 0; r < 3; r++) {
        t0 = mt_bench_now();
        sink += scan(p);
        double t = mt_bench_now() - t0;
        if (t < scan_s) scan_s = t;
    }
    (void)sink;

    /* encode on this thread: a freshly loaded copy has an empty cache (cold), then warm (best of 3) */
    char *json = NULL;
    mt_tokenizer *cold = NULL;
    if (mt_tok_to_json(tok, &json, NULL) != MT_OK || mt_tok_load_json(json, strlen(json), "bench", &cold) != MT_OK) {
        fprintf(stderr, "mt-bench tokenizer: %s\n", mt_last_error());
        return 1;
    }
    mt_sys_free(json);
    size_t n_ids = 0;
    t0 = mt_bench_now();
    if (encode_all(cold, p, &n_ids) != 0) return 1;
    double cold_s = mt_bench_now() - t0;
    double warm_s = 1e30;
    for (int r = 0; r < 3; r++) {
        t0 = mt_bench_now();
        if (encode_all(cold, p, &n_ids) != 0) return 1;
        double t = mt_bench_now() - t0;
        if (t < warm_s) warm_s = t;
    }

    double hf_train = -1, hf_enc = -1;
    const char *py = getenv("MT_TORCH_PYTHON");
    if (!py || !*py) py = "/usr/bin/python3";
    if (use_hf && access(py, X_OK) == 0) {
        char dir[] = "/tmp/mt-bench-tok-XXXXXX";
        if (mkdtemp(dir)) {
            if (hf_anchor(py, dir, p, vocab, &hf_train, &hf_enc) != 0) hf_train = hf_enc = -1;
            rmdir(dir);
        }
    }

    printf("mt-bench tokenizer: %zu pairs (%.1f MB of text, both sides), BPE vocabulary %zu\n", p->n, mb,
           mt_tok_vocab_size(tok));
    printf("  %-34s %10s   %s\n", "figure", "value", "against");
    printf("  %-34s %9.2fs   target 60 s: %.3f of it", "train BPE (files, zstd, 1 core)", train_s, train_s / 60.0);
    if (hf_train > 0) printf("; tokenizers BpeTrainer %.2fs (x%.2f)", hf_train, hf_train / train_s);
    printf("\n");
    printf("  %-34s %9.1f    MB/s; scan floor %.0f MB/s (%.3f of it)\n", "encode, cold cache (1 core)", mb / cold_s,
           mb / scan_s, scan_s / cold_s);
    printf("  %-34s %9.1f    MB/s; target 5 MB/s (x%.1f)", "encode, warm cache (1 core)", mb / warm_s, mb / warm_s / 5.0);
    if (hf_enc > 0) printf("; tokenizers 1 thread %.1f MB/s (x%.2f)", mb / hf_enc, hf_enc / warm_s);
    printf("\n  %-34s %9.2f\n", "tokens per sentence", (double)n_ids / (2.0 * (double)p->n));
    printf("{\"bench\":\"tokenizer\",\"pairs\":%zu,\"text_mb\":%.3f,\"vocab\":%zu,\"train_s\":%.3f,\"train_target_s\":60,"
           "\"train_vs_target\":%.4f,\"encode_cold_mb_s\":%.2f,\"encode_mb_s\":%.2f,\"encode_target_mb_s\":5,"
           "\"scan_mb_s\":%.1f,\"encode_vs_scan\":%.4f",
           p->n, mb, mt_tok_vocab_size(tok), train_s, train_s / 60.0, mb / cold_s, mb / warm_s, mb / scan_s, scan_s / warm_s);
    if (hf_train > 0)
        printf(",\"hf_train_s\":%.3f,\"train_speedup_vs_hf\":%.3f,\"hf_encode_1t_mb_s\":%.2f,\"encode_speedup_vs_hf\":%.3f",
               hf_train, hf_train / train_s, mb / hf_enc, hf_enc / warm_s);
    printf(",\"train_ok\":%s,\"encode_ok\":%s}\n", train_s < 60 ? "true" : "false", mb / warm_s >= 5 ? "true" : "false");
    mt_tok_free(cold);
    mt_tok_free(tok);
    mt_pairs_free(p);
    return 0;
}
