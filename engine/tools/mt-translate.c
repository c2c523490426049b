/*
 * mt-translate.c — offline translation with a model file, one sentence per line:
 *
 *   mt-translate --model en-it.mt [--beam 4] [--length-penalty 0.6] [--max-len-ratio 1.5]
 *                [--batch 32] [--threads N] [--gpus 0] [--ref ref.txt] [-i in.txt] [-o out.txt] [-q]
 *
 * Reads stdin (or -i), writes one translation per input line to stdout (or -o), in order; an empty
 * line gives an empty line. With --ref, prints BLEU and chrF (sacrebleu-compatible) of the output
 * against the reference file on stderr. Reading a file (not a terminal), it reports progress on
 * stderr. A terminal gets each line translated as soon as it is typed.
 * Uses only the public ABI (abi/microtensor.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/backend.h"
#include "microtensor.h"

/* The decoding defaults are the library's (mt_translate_options_create), but for the beam: 4 here. */
#define DEFAULT_BEAM 4

static void usage(FILE *f) {
    double lp = 0, ratio = 0;
    mt_translate_options_t *d = NULL;
    if (mt_translate_options_create(&d) == MT_OK) {
        mt_translate_options_get(d, MT_TRANSLATE_LENGTH_PENALTY, &lp);
        mt_translate_options_get(d, MT_TRANSLATE_MAX_LEN_RATIO, &ratio);
    }
    mt_translate_options_free(d);
    fprintf(f,
            "usage: mt-translate --model MODEL.mt[.zst] [options] < in.txt > out.txt\n"
            "  --model PATH          model or checkpoint file (required)\n"
            "  --beam N              beam size (1 = greedy; default %d)\n"
            "  --length-penalty A    GNMT length penalty alpha (default %g)\n"
            "  --max-len-ratio R     output limit: R x source tokens + 10 (default %g)\n"
            "  --batch N             sentences per batch (default 32)\n"
            "  --threads N           CPU threads (default: all cores)\n"
            "  --gpus I              translate on CUDA device I (default: CPU; one index)\n"
            "  --ref FILE            print BLEU and chrF of the output against FILE\n"
            "  -i FILE, -o FILE      input / output file instead of stdin / stdout\n"
            "  -q, --quiet           no progress on stderr\n",
            DEFAULT_BEAM, lp, ratio);
}

typedef struct lines {
    char **v;
    size_t n, cap;
} lines;

static int lines_push(lines *l, char *s) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        char **p = realloc(l->v, sizeof *p * cap);
        if (!p) return -1;
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = s;
    return 0;
}

static void lines_free(lines *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

/* One line without its newline (and a CR before it); NULL at end of file. */
static char *read_line(FILE *f, int *err) {
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n = getline(&buf, &cap, f);
    if (n < 0) {
        free(buf);
        *err = ferror(f);
        return NULL;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = 0;
    return buf;
}

static int read_all(FILE *f, lines *l) {
    int err = 0;
    char *s;
    while ((s = read_line(f, &err)))
        if (lines_push(l, s) != 0) return -1;
    return err ? -1 : 0;
}

static int fail(const char *what, mt_status st) {
    fprintf(stderr, "mt-translate: %s: %s (%s)\n", what, mt_last_error(), mt_status_str(st));
    return 1;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *ref_path = NULL, *in_path = NULL, *out_path = NULL;
    int batch = 32, threads = 0, device = MT_DEVICE_CPU, quiet = 0;
    mt_translate_options_t *opts = NULL;
    if (mt_translate_options_create(&opts) != MT_OK ||
        mt_translate_options_set(opts, MT_TRANSLATE_BEAM_SIZE, DEFAULT_BEAM) != MT_OK)
        return fail("options", MT_ERR_NOMEM);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED()                                                          \
    do {                                                                \
        if (!v) {                                                       \
            fprintf(stderr, "mt-translate: %s needs a value\n", a);     \
            return 2;                                                   \
        }                                                               \
        i++;                                                            \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model")) {
            NEED();
            model_path = v;
        } else if (!strcmp(a, "--beam")) {
            NEED();
            if (mt_translate_options_set(opts, MT_TRANSLATE_BEAM_SIZE, atof(v)) != MT_OK) {
                fprintf(stderr, "mt-translate: %s: %s\n", a, mt_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--length-penalty")) {
            NEED();
            if (mt_translate_options_set(opts, MT_TRANSLATE_LENGTH_PENALTY, atof(v)) != MT_OK) {
                fprintf(stderr, "mt-translate: %s: %s\n", a, mt_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--max-len-ratio")) {
            NEED();
            if (mt_translate_options_set(opts, MT_TRANSLATE_MAX_LEN_RATIO, atof(v)) != MT_OK) {
                fprintf(stderr, "mt-translate: %s: %s\n", a, mt_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--batch")) {
            NEED();
            batch = atoi(v);
        } else if (!strcmp(a, "--threads")) {
            NEED();
            threads = atoi(v);
        } else if (!strcmp(a, "--gpus")) {
            NEED();
            if (mt_device_single("mt-translate", v, &device) != MT_OK) {
                fprintf(stderr, "mt-translate: %s\n", mt_last_error());
                return 2;
            }
        } else if (!strcmp(a, "--ref")) {
            NEED();
            ref_path = v;
        } else if (!strcmp(a, "-i") || !strcmp(a, "--input")) {
            NEED();
            in_path = v;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            NEED();
            out_path = v;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = 1;
        } else {
            fprintf(stderr, "mt-translate: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
#undef NEED
    }
    if (!model_path) {
        usage(stderr);
        return 2;
    }
    if (batch < 1 || threads < 0) {
        fprintf(stderr, "mt-translate: --batch must be >= 1, --threads >= 0\n");
        return 2;
    }
    if (threads > 0) mt_set_num_threads(threads);
    FILE *in = stdin, *out = stdout;
    if (in_path && !(in = fopen(in_path, "r"))) {
        fprintf(stderr, "mt-translate: %s: %s\n", in_path, strerror(errno));
        return 1;
    }
    mt_model_t *model = NULL;
    mt_translator_t *tr = NULL;
    mt_status st = mt_model_load(model_path, device, &model);
    if (st != MT_OK) return fail(model_path, st);
    st = mt_translator_create(model, threads, &tr);
    if (st != MT_OK) return fail("translator", st);
    if (out_path && !(out = fopen(out_path, "w"))) {
        fprintf(stderr, "mt-translate: %s: %s\n", out_path, strerror(errno));
        return 1;
    }
    int interactive = !in_path && isatty(fileno(stdin));
    lines hyps = {0};
    int rc = 0;
    if (interactive) {
        /* A terminal: translate each line as it comes. */
        int err = 0;
        char *s;
        while ((s = read_line(in, &err))) {
            char **o = NULL;
            const char *one[1] = {s};
            st = mt_translate_with(tr, opts, one, NULL, 1, &o, NULL);
            if (st != MT_OK) {
                rc = fail("translate", st);
                free(s);
                break;
            }
            fprintf(out, "%s\n", o[0]);
            fflush(out);
            if (ref_path && lines_push(&hyps, strdup(o[0])) != 0) rc = 1;
            mt_free(o);
            free(s);
        }
    } else {
        lines src = {0};
        if (read_all(in, &src) != 0) {
            fprintf(stderr, "mt-translate: reading the input failed\n");
            rc = 1;
        }
        int progress = !quiet && src.n > (size_t)batch, tty = isatty(fileno(stderr));
        double t0 = mt_now_s(), last = t0;
        for (size_t i = 0; rc == 0 && i < src.n; i += (size_t)batch) {
            size_t n = src.n - i < (size_t)batch ? src.n - i : (size_t)batch;
            char **o = NULL;
            st = mt_translate_with(tr, opts, (const char *const *)src.v + i, NULL, n, &o, NULL);
            if (st != MT_OK) {
                char what[64];
                snprintf(what, sizeof what, "lines %zu..%zu", i + 1, i + n);
                rc = fail(what, st);
                break;
            }
            for (size_t j = 0; j < n; j++) {
                fprintf(out, "%s\n", o[j]);
                if (ref_path && lines_push(&hyps, strdup(o[j])) != 0) rc = 1;
            }
            mt_free(o);
            double t = mt_now_s();
            /* A terminal gets one line updated in place; a log gets a line every 10 s and at the end. */
            if (progress && (t - last > (tty ? 0.5 : 10.0) || i + n == src.n)) {
                double rate = (double)(i + n) / (t - t0);
                fprintf(stderr, "%smt-translate: %zu/%zu lines (%.1f lines/s, ETA %.0fs)%s", tty ? "\r" : "", i + n,
                        src.n, rate, rate > 0 ? (double)(src.n - i - n) / rate : 0.0, tty ? "   " : "\n");
                last = t;
            }
        }
        if (progress && tty) fputc('\n', stderr);
        lines_free(&src);
    }
    fflush(out);
    if (rc == 0 && ref_path) {
        FILE *rf = fopen(ref_path, "r");
        lines ref = {0};
        if (!rf || read_all(rf, &ref) != 0) {
            fprintf(stderr, "mt-translate: %s: cannot read\n", ref_path);
            rc = 1;
        } else if (ref.n != hyps.n) {
            fprintf(stderr, "mt-translate: %s has %zu lines, the input %zu\n", ref_path, ref.n, hyps.n);
            rc = 1;
        } else {
            double bleu = 0, chrf = 0;
            st = mt_metric_bleu((const char *const *)hyps.v, (const char *const *)ref.v, hyps.n, &bleu);
            if (st == MT_OK) st = mt_metric_chrf((const char *const *)hyps.v, (const char *const *)ref.v, hyps.n, &chrf);
            if (st != MT_OK) rc = fail("metrics", st);
            double beam = 0;
            mt_translate_options_get(opts, MT_TRANSLATE_BEAM_SIZE, &beam);
            if (rc == 0) fprintf(stderr, "BLEU = %.2f  chrF = %.2f  (%zu sentences, beam %g)\n", bleu, chrf, hyps.n, beam);
        }
        if (rf) fclose(rf);
        lines_free(&ref);
    }
    lines_free(&hyps);
    mt_translator_free(tr);
    mt_translate_options_free(opts);
    mt_model_free(model);
    if (in != stdin) fclose(in);
    if (out != stdout && fclose(out) != 0) rc = 1;
    return rc;
}
