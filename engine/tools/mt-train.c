/*
 * mt-train.c — offline training:
 *
 *   mt-train --config en-it.json [--key value ...] [--gpus 0] [--dump-split DIR] [-q]
 *   mt-train --config en-it.json --world-size N --rank R --rendezvous HOST:PORT   (one rank of N)
 *   mt-train --config en-it.json --ranks N                                       (N local ranks)
 *   mt-train --config en-it.json --gpus 0,1                                      (a rank per GPU)
 *
 * Every config key (model and training, engine/train/README.md) can be overridden on the command line
 * (--d_model 512). A terminal gets one progress line updated in place (step, loss, tokens/s, ETA);
 * otherwise a line per log interval. out_dir/metrics.jsonl receives one JSON object per event. The
 * first Ctrl-C saves a checkpoint and exits (130); a second one exits at once. Exit status: 0 done,
 * 1 error, 2 usage, 130 interrupted.
 *
 * Data parallel (engine/train/dist.h): --world-size/--rank/--rendezvous (or MT_WORLD_SIZE, MT_RANK,
 * MT_RENDEZVOUS, like torchrun's variables) make this process one rank; only rank 0 prints progress
 * and writes files. --ranks N starts N such processes on this host itself (rendezvous on a free
 * loopback port), each with threads / N kernel threads, and exits with the first failing rank's
 * status; a rank that fails makes the others fail within comm_timeout_s. --gpus with several devices
 * does the same with one rank per device (NCCL); every device must be present.
 */
#include <sys/wait.h>
#include <time.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/store.h"
#include "core/backend.h"
#include "core/error.h"
#include "io/io.h"
#include "train/trainer.h"

#define MT_TRAIN_MAX_GPUS 64

static struct mt_trainer *g_trainer;

static void on_sigint(int sig) {
    (void)sig;
    if (g_trainer) mt_trainer_cancel(g_trainer); /* an atomic store: async-signal-safe */
    signal(SIGINT, SIG_DFL);
}

static void usage(FILE *f) {
    mt_model_config mc;
    mt_train_config tc;
    mt_model_config_default(&mc);
    mt_train_config_default(&tc);
    fprintf(f, "usage: mt-train --config CONFIG.json [--KEY VALUE ...] [--gpus I] [--dump-split DIR] [-q]\n\n"
               "  --config FILE        the training config (JSON object of the keys below)\n"
               "  --gpus I             train on CUDA device I (the key 'device')\n"
               "  --gpus I,J,...       start one local rank per CUDA device (NCCL)\n"
               "  --dump-split DIR     write train/valid/test TSV of the split (and the tokenizer) and exit\n"
               "  --world-size N --rank R --rendezvous HOST:PORT\n"
               "                       be rank R of N data-parallel ranks (or MT_WORLD_SIZE, MT_RANK, MT_RENDEZVOUS)\n"
               "  --ranks N            start N local ranks (processes), threads / N threads each\n"
               "  -q, --quiet          no progress output\n\nmodel keys:\n");
    mt_cfg_print_help(&mt_model_config_table, &mc, f);
    fprintf(f, "\ntraining keys:\n");
    mt_cfg_print_help(&mt_train_config_table, &tc, f);
}

static int g_tty, g_quiet, g_open_line;

static void fmt_dur(double s, char *buf, size_t cap) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, cap, "%lds", t);
}

static void end_line(void) {
    if (g_open_line) fputc('\n', stderr);
    g_open_line = 0;
}

/* The progress callback: a human rendering of each event on stderr. */
static void on_event(const char *json, void *user) {
    (void)user;
    if (g_quiet) return;
    json_t *e = json_loads(json, 0, NULL);
    if (!e) return;
    const char *ev = json_string_value(json_object_get(e, "event"));
    long long step = (long long)json_integer_value(json_object_get(e, "step"));
    double num = 0;
    if (ev && !strcmp(ev, "step")) {
        char eta[32];
        fmt_dur(json_number_value(json_object_get(e, "eta_s")), eta, sizeof eta);
        fprintf(stderr, "%sstep %lld/%lld | loss %.4f | %.0f tok/s | lr %.2e | epoch %lld | ETA %s%s",
                g_tty ? "\r" : "", step, (long long)json_integer_value(json_object_get(e, "max_steps")),
                json_number_value(json_object_get(e, "loss")), json_number_value(json_object_get(e, "tokens_per_s")),
                json_number_value(json_object_get(e, "lr")), (long long)json_integer_value(json_object_get(e, "epoch")),
                eta, g_tty ? "   " : "\n");
        g_open_line = g_tty;
    } else if (ev && !strcmp(ev, "valid")) {
        end_line();
        fprintf(stderr, "valid @ %lld: loss %.4f ppl %.2f", step, json_number_value(json_object_get(e, "valid_loss")),
                json_number_value(json_object_get(e, "valid_ppl")));
        if (json_object_get(e, "bleu"))
            fprintf(stderr, " | BLEU %.2f chrF %.2f (%lld sentences)", json_number_value(json_object_get(e, "bleu")),
                    json_number_value(json_object_get(e, "chrf")),
                    (long long)json_integer_value(json_object_get(e, "sentences")));
        fprintf(stderr, "%s\n", json_is_true(json_object_get(e, "best")) ? " (best)" : "");
    } else if (ev && !strcmp(ev, "checkpoint")) {
        end_line();
        fprintf(stderr, "checkpoint @ %lld: %s\n", step, json_string_value(json_object_get(e, "path")));
    } else if (ev && !strcmp(ev, "start")) {
        const char *from = json_string_value(json_object_get(e, "resumed_from"));
        fprintf(stderr, "mt-train: %lld parameters, vocabulary %lld, %lld training pairs (%lld batches/epoch), "
                        "%lld valid, %lld test%s%s\n",
                (long long)json_integer_value(json_object_get(e, "params")),
                (long long)json_integer_value(json_object_get(e, "vocab_size")),
                (long long)json_integer_value(json_object_get(e, "train_pairs")),
                (long long)json_integer_value(json_object_get(e, "batches_per_epoch")),
                (long long)json_integer_value(json_object_get(e, "valid_pairs")),
                (long long)json_integer_value(json_object_get(e, "test_pairs")), from ? "; resumed from " : "",
                from ? from : "");
    } else if (ev && (!strcmp(ev, "done") || !strcmp(ev, "cancelled"))) {
        end_line();
        char el[32];
        fmt_dur(json_number_value(json_object_get(e, "elapsed_s")), el, sizeof el);
        fprintf(stderr, "\n%s after %lld steps (%s) in %s of training\n", !strcmp(ev, "done") ? "Finished" : "Interrupted",
                step, json_string_value(json_object_get(e, "reason")), el);
        fprintf(stderr, "  training loss (smoothed)  %.4f\n", json_number_value(json_object_get(e, "loss")));
        if ((num = json_number_value(json_object_get(e, "best_valid_loss"))) != 0)
            fprintf(stderr, "  best validation loss      %.4f\n", num);
        if (json_object_get(e, "bleu"))
            fprintf(stderr, "  last validation BLEU/chrF %.2f / %.2f\n", json_number_value(json_object_get(e, "bleu")),
                    json_number_value(json_object_get(e, "chrf")));
        fprintf(stderr, "  checkpoint                %s\n", json_string_value(json_object_get(e, "checkpoint")));
        if (json_object_get(e, "model"))
            fprintf(stderr, "  model                     %s\n", json_string_value(json_object_get(e, "model")));
        if (json_object_get(e, "best_model"))
            fprintf(stderr, "  best model (valid loss)   %s\n", json_string_value(json_object_get(e, "best_model")));
    } else if (ev && !strcmp(ev, "error")) {
        end_line();
    }
    fflush(stderr);
    json_decref(e);
}

static volatile sig_atomic_t g_forward_sig;

static void on_parent_signal(int sig) { g_forward_sig = sig; }

/* --ranks N: runs this program N times as ranks 0..N-1 of a loopback world and waits for them. A rank
 * that fails makes the others fail within comm_timeout_s; the parent waits that long plus a margin,
 * then kills what is left. Returns the exit status. */
static int spawn_ranks(int argc, char **argv, int n, int threads, const int *gpus) {
    int port = mt_store_free_port();
    if (port < 0) {
        fprintf(stderr, "mt-train: --ranks: no free loopback port\n");
        return 1;
    }
    char ws[16], rdv[32], th[16];
    snprintf(ws, sizeof ws, "%d", n);
    snprintf(rdv, sizeof rdv, "127.0.0.1:%d", port);
    snprintf(th, sizeof th, "%d", threads);
    pid_t *pid = calloc((size_t)n, sizeof *pid);
    char **args = calloc((size_t)argc + 12, sizeof *args);
    if (!pid || !args) {
        fprintf(stderr, "mt-train: out of memory\n");
        return 1;
    }
    signal(SIGINT, on_parent_signal);
    signal(SIGTERM, on_parent_signal);
    for (int r = 0; r < n; r++) {
        char rk[16];
        snprintf(rk, sizeof rk, "%d", r);
        int k = 0;
        args[k++] = argv[0];
        for (int i = 1; i < argc; i++) {
            if (!strcmp(argv[i], "--ranks") || !strcmp(argv[i], "--threads") || !strcmp(argv[i], "--gpus")) {
                i++;
                continue;
            }
            args[k++] = argv[i];
        }
        args[k++] = "--world-size";
        args[k++] = ws;
        args[k++] = "--rank";
        args[k++] = rk;
        args[k++] = "--rendezvous";
        args[k++] = rdv;
        args[k++] = "--threads";
        args[k++] = th;
        char dev[16];
        if (gpus) {
            snprintf(dev, sizeof dev, "%d", gpus[r]);
            args[k++] = "--gpus";
            args[k++] = dev;
        }
        args[k] = NULL;
        pid[r] = fork();
        if (pid[r] == 0) {
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            execv("/proc/self/exe", args);
            fprintf(stderr, "mt-train: exec: %s\n", strerror(errno));
            _exit(1);
        }
        if (pid[r] < 0) {
            fprintf(stderr, "mt-train: fork: %s\n", strerror(errno));
            for (int q = 0; q < r; q++) kill(pid[q], SIGKILL);
            n = r;
            break;
        }
    }
    int rc = 0, left = n, failed_at = 0;
    time_t kill_at = 0;
    while (left > 0) {
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p > 0) {
            for (int r = 0; r < n; r++)
                if (pid[r] == p) pid[r] = 0;
            left--;
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            if (code != 0 && rc == 0) {
                rc = code;
                failed_at = 1;
                /* The others leave within comm_timeout_s (default 60) of the failure. */
                kill_at = time(NULL) + 120;
            }
            continue;
        }
        if (g_forward_sig) {
            for (int r = 0; r < n; r++)
                if (pid[r] > 0) kill(pid[r], g_forward_sig);
            g_forward_sig = 0;
        }
        if (failed_at && time(NULL) > kill_at) {
            for (int r = 0; r < n; r++)
                if (pid[r] > 0) kill(pid[r], SIGKILL);
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    free(pid);
    free(args);
    return rc;
}

int main(int argc, char **argv) {
    const char *config = NULL, *dump = NULL;
    const char **kv = calloc((size_t)argc * 2 + 8, sizeof *kv);
    int n_kv = 0, ranks = 0, threads = 0, have_world = 0, have_rank = 0, have_rdv = 0, rank = 0;
    int gpus[MT_TRAIN_MAX_GPUS], n_gpus = 0;
    char devbuf[16];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(kv);
            return 0;
        }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            g_quiet = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc) {
            fprintf(stderr, "mt-train: expected --key value, got '%s'\n", a);
            usage(stderr);
            free(kv);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--config")) config = v;
        else if (!strcmp(a, "--dump-split")) dump = v;
        else if (!strcmp(a, "--ranks")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > 256) {
                fprintf(stderr, "mt-train: --ranks '%s': want 1..256\n", v);
                free(kv);
                return 2;
            }
            ranks = (int)n;
        } else if (!strcmp(a, "--world-size") || !strcmp(a, "--rank") || !strcmp(a, "--rendezvous")) {
            kv[2 * n_kv] = !strcmp(a, "--world-size") ? "world_size" : !strcmp(a, "--rank") ? "rank" : "rendezvous";
            kv[2 * n_kv + 1] = v;
            n_kv++;
            have_world |= !strcmp(a, "--world-size");
            have_rdv |= !strcmp(a, "--rendezvous");
            if (!strcmp(a, "--rank")) {
                have_rank = 1;
                rank = atoi(v);
            }
        }
        else if (!strcmp(a, "--gpus")) {
            /* Every device must be present: a clear error here rather than one per rank. */
            mt_status ds = mt_devices_parse(v, gpus, MT_TRAIN_MAX_GPUS, &n_gpus);
            if (ds != MT_OK) {
                fprintf(stderr, "mt-train: %s\n", mt_last_error());
                free(kv);
                return ds == MT_ERR_NO_DEVICE ? 1 : 2;
            }
            if (n_gpus > 1) continue; /* a rank per device, started below */
            int dev = n_gpus == 1 ? gpus[0] : MT_DEVICE_CPU;
            snprintf(devbuf, sizeof devbuf, "%d", dev);
            kv[2 * n_kv] = "device";
            kv[2 * n_kv + 1] = devbuf;
            n_kv++;
        } else {
            if (!strcmp(a, "--threads")) threads = atoi(v);
            kv[2 * n_kv] = a + 2;
            kv[2 * n_kv + 1] = v;
            n_kv++;
        }
    }
    /* torchrun's variables, where the flags did not say. */
    const char *env[3] = {getenv("MT_WORLD_SIZE"), getenv("MT_RANK"), getenv("MT_RENDEZVOUS")};
    const char *keys[3] = {"world_size", "rank", "rendezvous"};
    int have[3] = {have_world, have_rank, have_rdv};
    for (int k = 0; k < 3 && !ranks; k++)
        if (env[k] && env[k][0] && !have[k]) {
            kv[2 * n_kv] = keys[k];
            kv[2 * n_kv + 1] = env[k];
            n_kv++;
            if (k == 1) rank = atoi(env[k]);
        }
    if (n_gpus > 1 && ranks > 0) {
        fprintf(stderr, "mt-train: --gpus with several devices starts a rank per device; it takes no --ranks\n");
        free(kv);
        return 2;
    }
    if (n_gpus > 1) ranks = n_gpus;
    if (ranks > 0) {
        if (have_world || have_rank || have_rdv || dump) {
            fprintf(stderr, "mt-train: --ranks (or --gpus with several devices) starts the ranks itself; it takes no "
                            "--world-size, --rank, --rendezvous or --dump-split\n");
            free(kv);
            return 2;
        }
        if (!config) {
            usage(stderr);
            free(kv);
            return 2;
        }
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        int total = threads > 0 ? threads : (int)(cores > 0 ? cores : 1);
        int per = total / ranks > 0 ? total / ranks : 1;
        free(kv);
        return spawn_ranks(argc, argv, ranks, per, n_gpus > 1 ? gpus : NULL);
    }
    if (rank > 0) g_quiet = 1; /* rank 0 reports; the others print only their errors */
    if (!config) {
        usage(stderr);
        free(kv);
        return 2;
    }
    char *json = NULL;
    size_t len = 0;
    mt_status st = mt_file_read_all(config, &json, &len);
    if (st != MT_OK) {
        fprintf(stderr, "mt-train: %s\n", mt_last_error());
        free(kv);
        return 1;
    }
    g_tty = isatty(fileno(stderr));
    struct mt_trainer *tr = NULL;
    st = mt_trainer_new(json, kv, n_kv, NULL, config, &tr);
    mt_sys_free(json);
    free(kv);
    if (st != MT_OK) {
        fprintf(stderr, "mt-train: %s (%s)\n", mt_last_error(), mt_status_str(st));
        return 1;
    }
    if (dump) {
        st = mt_trainer_dump_split(tr, dump);
        if (st != MT_OK) fprintf(stderr, "mt-train: %s\n", mt_last_error());
        else if (!g_quiet) fprintf(stderr, "mt-train: split written to %s\n", dump);
        mt_trainer_free(tr);
        return st == MT_OK ? 0 : 1;
    }
    mt_trainer_set_progress_callback(tr, on_event, NULL);
    g_trainer = tr;
    signal(SIGINT, on_sigint);
    st = mt_trainer_loop(tr, 1, 0);
    signal(SIGINT, SIG_DFL);
    g_trainer = NULL;
    end_line();
    int rc = 0;
    if (st == MT_ERR_CANCELLED) {
        rc = 130;
    } else if (st != MT_OK) {
        fprintf(stderr, "mt-train: %s (%s)\n", mt_last_error(), mt_status_str(st));
        rc = 1;
    }
    mt_trainer_free(tr);
    return rc;
}
