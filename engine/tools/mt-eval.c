/*
 * mt-eval.c — `mt-eval --ref ref.txt [--json] < hyp.txt`: BLEU, chrF, CER and WER of a hypothesis
 * file against a reference file, one sentence per line, printed the way the sacrebleu command line
 * prints them (text lines aligned on '=', or its JSON list with --json). Like sacrebleu, every line
 * is stripped of trailing whitespace first; files may be .zst-compressed.
 *
 *   mt-eval --ref REF [--hyp HYP] [--json] [--width N] [--metrics bleu,chrf,cer,wer]
 *
 * Exit status: 0 scored, 1 on an error (unreadable file, invalid UTF-8, different line counts), 2 on
 * bad usage.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "io/io.h"
#include "microtensor.h"
#include "text/metrics.h"
#include "text/unicode.h"

#define SIG_VERSION "mt-" /* followed by the library version: our implementation, sacrebleu's rules */

typedef struct lines {
    char **v;
    size_t n, cap;
} lines;

static void lines_free(lines *l) {
    for (size_t i = 0; i < l->n; i++) mt_sys_free(l->v[i]);
    mt_sys_free(l->v);
}

static int read_lines(const char *path, const char *label, lines *out) {
    mt_reader *r = NULL;
    if (mt_reader_open(path, &r) != MT_OK) {
        fprintf(stderr, "mt-eval: %s\n", mt_last_error());
        return -1;
    }
    for (;;) {
        const char *l = NULL;
        size_t n = 0;
        if (mt_reader_line(r, &l, &n) != MT_OK) {
            fprintf(stderr, "mt-eval: %s\n", mt_last_error());
            mt_reader_close(r);
            return -1;
        }
        if (!l) break;
        size_t bad = 0;
        if (!mt_utf8_valid(l, n, &bad) || memchr(l, '\0', n)) {
            fprintf(stderr, "mt-eval: %s:%llu: invalid UTF-8 (or a NUL byte) at byte %zu\n", label,
                    (unsigned long long)mt_reader_lineno(r), bad + 1);
            mt_reader_close(r);
            return -1;
        }
        n = mt_py_rstrip_len(l, n);
        if (out->n == out->cap) {
            size_t nc = out->cap ? out->cap * 2 : 1024;
            char **nv = mt_sys_realloc(out->v, nc * sizeof *nv);
            if (!nv) {
                fprintf(stderr, "mt-eval: out of memory\n");
                mt_reader_close(r);
                return -1;
            }
            out->v = nv;
            out->cap = nc;
        }
        char *s = mt_sys_malloc(n + 1);
        if (!s) {
            fprintf(stderr, "mt-eval: out of memory\n");
            mt_reader_close(r);
            return -1;
        }
        memcpy(s, l, n);
        s[n] = '\0';
        out->v[out->n++] = s;
    }
    mt_reader_close(r);
    return 0;
}

/* Python's repr of float(f"{x:.{w}f}"): the shortest digits that read back as that double. */
static void py_float(char *buf, size_t cap, double x, int width) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.*f", width, x);
    double v = strtod(tmp, NULL);
    if (isnan(v)) {
        snprintf(buf, cap, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, cap, v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", cap - strlen(buf) - 1);
}

static void usage(void) {
    fprintf(stderr, "usage: mt-eval --ref REF [--hyp HYP] [--json] [--width N] [--metrics bleu,chrf,cer,wer] < HYP\n"
                    "  BLEU and chrF as sacrebleu's defaults (13a, exp smoothing; chrF2), CER and WER as torchmetrics.\n");
}

int main(int argc, char **argv) {
    const char *ref = NULL, *hyp = NULL, *metrics = "bleu,chrf,cer,wer";
    int json = 0, width = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((!strcmp(a, "--ref") || !strcmp(a, "-r")) && i + 1 < argc) ref = argv[++i];
        else if ((!strcmp(a, "--hyp") || !strcmp(a, "-i")) && i + 1 < argc) hyp = argv[++i];
        else if (!strcmp(a, "--json")) json = 1;
        else if ((!strcmp(a, "--width") || !strcmp(a, "-w")) && i + 1 < argc) width = atoi(argv[++i]);
        else if ((!strcmp(a, "--metrics") || !strcmp(a, "-m")) && i + 1 < argc) metrics = argv[++i];
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        } else {
            fprintf(stderr, "mt-eval: unknown or incomplete argument '%s'\n", a);
            usage();
            return 2;
        }
    }
    if (!ref) {
        fprintf(stderr, "mt-eval: --ref is required\n");
        usage();
        return 2;
    }
    if (width < 0 || width > 10) {
        fprintf(stderr, "mt-eval: --width must be 0..10\n");
        return 2;
    }
    int want_bleu = strstr(metrics, "bleu") != NULL, want_chrf = strstr(metrics, "chrf") != NULL;
    int want_cer = strstr(metrics, "cer") != NULL, want_wer = strstr(metrics, "wer") != NULL;
    if (!want_bleu && !want_chrf && !want_cer && !want_wer) {
        fprintf(stderr, "mt-eval: --metrics names none of bleu, chrf, cer, wer\n");
        return 2;
    }
    lines H = {0}, R = {0};
    const char *hyp_path = hyp && strcmp(hyp, "-") ? hyp : "/dev/stdin";
    const char *hyp_label = hyp && strcmp(hyp, "-") ? hyp : "stdin";
    int rc = 1;
    if (read_lines(ref, ref, &R) != 0 || read_lines(hyp_path, hyp_label, &H) != 0) goto done;
    if (H.n != R.n) {
        fprintf(stderr, "mt-eval: the hypothesis (%s) has %zu lines but the reference (%s) has %zu\n", hyp_label, H.n, ref, R.n);
        goto done;
    }
    const char *const *hv = (const char *const *)H.v, *const *rv = (const char *const *)R.v;
    char sigver[32];
    snprintf(sigver, sizeof sigver, SIG_VERSION "%s", mt_version_string());
    char out[4][1024];
    int nout = 0;
    char sc[64];
    if (want_bleu) {
        mt_bleu_score s;
        if (mt_bleu_corpus(hv, rv, H.n, &s) != MT_OK) {
            fprintf(stderr, "mt-eval: %s\n", mt_last_error());
            goto done;
        }
        char verbose[256];
        snprintf(verbose, sizeof verbose, "%.1f/%.1f/%.1f/%.1f (BP = %.3f ratio = %.3f hyp_len = %llu ref_len = %llu)",
                 s.precisions[0], s.precisions[1], s.precisions[2], s.precisions[3], s.bp, s.ratio,
                 (unsigned long long)s.stats.sys_len, (unsigned long long)s.stats.ref_len);
        const char *sig_fmt = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:%s";
        char sig[256];
        snprintf(sig, sizeof sig, sig_fmt, sigver);
        if (json) {
            py_float(sc, sizeof sc, s.score, width);
            snprintf(out[nout++], sizeof out[0],
                     "{\n \"name\": \"BLEU\",\n \"score\": %s,\n \"signature\": \"%s\",\n \"verbose_score\": \"%s\",\n"
                     " \"nrefs\": \"1\",\n \"case\": \"mixed\",\n \"eff\": \"no\",\n \"tok\": \"13a\",\n \"smooth\": \"exp\",\n"
                     " \"version\": \"%s\"\n}",
                     sc, sig, verbose, sigver);
        } else {
            snprintf(out[nout++], sizeof out[0], "BLEU|%s = %.*f %s", sig, width, s.score, verbose);
        }
    }
    if (want_chrf) {
        double v = 0;
        if (mt_chrf_corpus(hv, rv, H.n, &v) != MT_OK) {
            fprintf(stderr, "mt-eval: %s\n", mt_last_error());
            goto done;
        }
        char sig[256];
        snprintf(sig, sizeof sig, "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:%s", sigver);
        if (json) {
            py_float(sc, sizeof sc, v, width);
            snprintf(out[nout++], sizeof out[0],
                     "{\n \"name\": \"chrF2\",\n \"score\": %s,\n \"signature\": \"%s\",\n \"nrefs\": \"1\",\n"
                     " \"case\": \"mixed\",\n \"eff\": \"yes\",\n \"nc\": \"6\",\n \"nw\": \"0\",\n \"space\": \"no\",\n"
                     " \"version\": \"%s\"\n}",
                     sc, sig, sigver);
        } else {
            snprintf(out[nout++], sizeof out[0], "chrF2|%s = %.*f", sig, width, v);
        }
    }
    for (int k = 0; k < 2; k++) {
        if (!(k == 0 ? want_cer : want_wer)) continue;
        double v = 0;
        mt_status st = k == 0 ? mt_cer_corpus(hv, rv, H.n, &v) : mt_wer_corpus(hv, rv, H.n, &v);
        if (st != MT_OK) {
            fprintf(stderr, "mt-eval: %s\n", mt_last_error());
            goto done;
        }
        const char *name = k == 0 ? "CER" : "WER";
        if (json) {
            py_float(sc, sizeof sc, v, width + 3);
            snprintf(out[nout++], sizeof out[0], "{\n \"name\": \"%s\",\n \"score\": %s,\n \"signature\": \"%s\"\n}", name, sc,
                     k == 0 ? "edit distance over characters / reference characters (torchmetrics CER)"
                            : "edit distance over words / reference words (torchmetrics WER)");
        } else {
            snprintf(out[nout++], sizeof out[0], "%s = %.*f", name, width + 3, v);
        }
    }
    if (json) {
        if (nout == 1) {
            printf("%s\n", out[0]);
        } else {
            printf("[\n");
            for (int i = 0; i < nout; i++) printf("%s%s\n", out[i], i + 1 < nout ? "," : "");
            printf("]\n");
        }
    } else {
        /* aligned on '=' like sacrebleu's print_single_results */
        size_t w = 0;
        for (int i = 0; i < nout; i++) {
            size_t l = (size_t)(strchr(out[i], '=') - out[i]) - 1;
            if (l > w) w = l;
        }
        for (int i = 0; i < nout; i++) {
            size_t l = (size_t)(strchr(out[i], '=') - out[i]) - 1;
            printf("%*s%s\n", (int)(w - l), "", out[i]);
        }
    }
    rc = 0;
done:
    lines_free(&H);
    lines_free(&R);
    return rc;
}
