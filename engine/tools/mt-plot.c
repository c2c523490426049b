/*
 * mt-plot.c — training curves of a run, drawn by gnuplot (Debian's gnuplot-nox):
 *
 *   mt-plot RUN_DIR [-o curves.svg]
 *
 * Reads RUN_DIR/metrics.jsonl (engine/train/README.md) and draws, against the step: training and
 * validation loss, the learning rate, tokens/s (and each rank's tokens/s of a data-parallel run),
 * and validation BLEU and chrF. The data go to a temporary directory as whitespace columns, the
 * gnuplot script beside them, and gnuplot runs with no shell in between; it writes OUT.tmp, renamed
 * to OUT when it succeeded (never a half-written picture). Default output: RUN_DIR/curves.svg. Exit status: 0 written, 1 error (named), 2 usage.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_RANKS 1024

static int fail(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "mt-plot: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return 1;
}

/* gnuplot quotes strings in single quotes, doubling none: refuse a path it cannot take. */
static int plain_path(const char *p) { return strchr(p, '\'') == NULL && strchr(p, '\n') == NULL; }

int main(int argc, char **argv) {
    const char *run = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: mt-plot RUN_DIR [-o curves.svg]\n");
            return 0;
        } else if (!run && argv[i][0] != '-') run = argv[i];
        else {
            fprintf(stderr, "usage: mt-plot RUN_DIR [-o curves.svg]\n");
            return 2;
        }
    }
    if (!run) {
        fprintf(stderr, "usage: mt-plot RUN_DIR [-o curves.svg]\n");
        return 2;
    }
    char metrics[4096], outbuf[4096];
    if (snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", run) >= (int)sizeof metrics) return fail("%s%s: path too long", run, "");
    if (!out) {
        snprintf(outbuf, sizeof outbuf, "%s/curves.svg", run);
        out = outbuf;
    }
    if (!plain_path(out)) return fail("output path %s%s: contains a quote or newline", out, "");
    char tmp_out[4200];
    snprintf(tmp_out, sizeof tmp_out, "%s.tmp", out);
    FILE *f = fopen(metrics, "r");
    if (!f) return fail("%s: %s", metrics, strerror(errno));
    char dir[] = "/tmp/mt-plot-XXXXXX";
    if (!mkdtemp(dir)) {
        fclose(f);
        return fail("mkdtemp: %s%s", strerror(errno), "");
    }
    char p_step[64], p_valid[64], p_rank[64], p_gp[64];
    snprintf(p_step, sizeof p_step, "%s/step.dat", dir);
    snprintf(p_valid, sizeof p_valid, "%s/valid.dat", dir);
    snprintf(p_rank, sizeof p_rank, "%s/rank.dat", dir);
    snprintf(p_gp, sizeof p_gp, "%s/plot.gp", dir);
    FILE *fs = fopen(p_step, "w"), *fv = fopen(p_valid, "w"), *fr = fopen(p_rank, "w");
    int n_step = 0, n_valid = 0, n_bleu = 0, ranks = 0, line_no = 0, bad = 0;
    char line[1 << 16];
    while (fs && fv && fr && fgets(line, sizeof line, f)) {
        line_no++;
        json_error_t err;
        json_t *e = json_loads(line, 0, &err);
        if (!e) {
            fprintf(stderr, "mt-plot: %s:%d: not JSON (%s); line skipped\n", metrics, line_no, err.text);
            bad++;
            continue;
        }
        const char *ev = json_string_value(json_object_get(e, "event"));
        long long step = (long long)json_integer_value(json_object_get(e, "step"));
        if (ev && !strcmp(ev, "step")) {
            fprintf(fs, "%lld %.9g %.9g %.9g\n", step, json_number_value(json_object_get(e, "loss")),
                    json_number_value(json_object_get(e, "lr")), json_number_value(json_object_get(e, "tokens_per_s")));
            n_step++;
            json_t *rr = json_object_get(e, "rank_tokens_per_s");
            if (json_is_array(rr) && json_array_size(rr) > 0) {
                size_t k, nr = json_array_size(rr) < MAX_RANKS ? json_array_size(rr) : MAX_RANKS;
                fprintf(fr, "%lld", step);
                for (k = 0; k < nr; k++) fprintf(fr, " %.9g", json_number_value(json_array_get(rr, k)));
                fprintf(fr, "\n");
                if ((int)nr > ranks) ranks = (int)nr;
            }
        } else if (ev && !strcmp(ev, "valid")) {
            json_t *b = json_object_get(e, "bleu"), *c = json_object_get(e, "chrf");
            fprintf(fv, "%lld %.9g", step, json_number_value(json_object_get(e, "valid_loss")));
            if (b && c) {
                fprintf(fv, " %.9g %.9g\n", json_number_value(b), json_number_value(c));
                n_bleu++;
            } else {
                fprintf(fv, " NaN NaN\n");
            }
            n_valid++;
        }
        json_decref(e);
    }
    fclose(f);
    int ok = fs && fv && fr;
    if (fs) ok &= fclose(fs) == 0;
    if (fv) ok &= fclose(fv) == 0;
    if (fr) ok &= fclose(fr) == 0;
    int rc = 0;
    if (!ok) rc = fail("writing the data in %s: %s", dir, strerror(errno));
    else if (n_step == 0) rc = fail("%s: no step event to plot%s", metrics, bad ? " (lines that do not parse)" : "");
    FILE *g = rc ? NULL : fopen(p_gp, "w");
    if (!rc && !g) rc = fail("%s: %s", p_gp, strerror(errno));
    if (g) {
        fprintf(g, "set terminal svg size 1200,900 dynamic enhanced font 'sans,11'\n");
        fprintf(g, "set output '%s'\n", tmp_out);
        fprintf(g, "set multiplot layout 2,2 title 'MicroTensor training: %s'\n", plain_path(run) ? run : "run");
        fprintf(g, "set grid\nset key top right\nset xlabel 'step'\n");
        fprintf(g, "set title 'loss'\nplot '%s' using 1:2 with lines title 'training'", p_step);
        if (n_valid) fprintf(g, ", '%s' using 1:2 with linespoints title 'validation'", p_valid);
        fprintf(g, "\nset title 'learning rate'\nplot '%s' using 1:3 with lines notitle\n", p_step);
        fprintf(g, "set title 'tokens/s'\nplot '%s' using 1:4 with lines title 'all ranks'", p_step);
        for (int r = 0; r < ranks; r++) fprintf(g, ", '%s' using 1:%d with lines title 'rank %d'", p_rank, r + 2, r);
        fprintf(g, "\nset title 'validation BLEU / chrF'\n");
        if (n_bleu)
            fprintf(g, "plot '%s' using 1:3 with linespoints title 'BLEU', '%s' using 1:4 with linespoints title 'chrF'\n",
                    p_valid, p_valid);
        else
            fprintf(g, "unset key\nset label 1 'no validation translations in this run' at graph 0.5,0.5 center\n"
                       "plot [0:1][0:1] NaN notitle\n");
        fprintf(g, "unset multiplot\n");
        if (fclose(g) != 0) rc = fail("%s: %s", p_gp, strerror(errno));
    }
    if (!rc) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            execlp("gnuplot", "gnuplot", p_gp, (char *)NULL);
            fprintf(stderr, "mt-plot: cannot run gnuplot (%s); install Debian's gnuplot-nox\n", strerror(errno));
            _exit(127);
        }
        int st = 0;
        if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            rc = fail("gnuplot failed on %s%s", p_gp, "");
        if (!rc && rename(tmp_out, out) != 0) rc = fail("rename to %s: %s", out, strerror(errno));
        if (rc) unlink(tmp_out);
    }
    unlink(p_step);
    unlink(p_valid);
    unlink(p_rank);
    unlink(p_gp);
    rmdir(dir);
    if (!rc) printf("%s: %d steps, %d validations, %d rank%s\n", out, n_step, n_valid, ranks ? ranks : 1,
                    ranks > 1 ? "s" : "");
    return rc;
}
