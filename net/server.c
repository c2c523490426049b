/*
 * server.c — mt-server's life: options, engine setup (devices, workers, the startup model), TLS,
 * listeners, the event loop, and an orderly teardown in which every thread is joined and every
 * allocation freed (the tests run it under LeakSanitizer).
 */
#include "server.h"
#include "cluster.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/thread.h>

#include "log.h"

/* The engine's log lines come from every worker, and some repeat per sentence (a source over
 * max_len): its info and warning lines are rate-limited, at most ENGINE_LOG_BURST per
 * ENGINE_LOG_WINDOW_US, then one line says how many were not shown (also counted in
 * mt_engine_log_suppressed_total). Errors always pass; debug lines are filtered by level as usual. */
#define ENGINE_LOG_BURST 10
#define ENGINE_LOG_WINDOW_US 10000000u
static pthread_mutex_t g_elog_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_elog_window_us, g_elog_count, g_elog_dropped;
static mt_metrics *g_elog_metrics;

static void engine_log(int level, const char *msg) {
    int l = level <= MT_LOG_DEBUG ? MT_NLOG_DEBUG : level == MT_LOG_INFO ? MT_NLOG_INFO
                                                : level == MT_LOG_WARN   ? MT_NLOG_WARN
                                                                         : MT_NLOG_ERROR;
    if (l == MT_NLOG_INFO || l == MT_NLOG_WARN) {
        uint64_t now = mt_now_us(), dropped = 0;
        pthread_mutex_lock(&g_elog_mu);
        if (now - g_elog_window_us >= ENGINE_LOG_WINDOW_US) {
            dropped = g_elog_dropped;
            g_elog_dropped = g_elog_count = 0;
            g_elog_window_us = now;
        }
        bool show = g_elog_count < ENGINE_LOG_BURST;
        if (show) g_elog_count++;
        else g_elog_dropped++;
        pthread_mutex_unlock(&g_elog_mu);
        if (dropped)
            mt_nlog(MT_NLOG_WARN, "engine: %llu more log lines in the last %u s were not shown", (unsigned long long)dropped,
                    ENGINE_LOG_WINDOW_US / 1000000u);
        if (!show) {
            if (g_elog_metrics) mt_metric_inc(&g_elog_metrics->engine_log_suppressed);
            return;
        }
    }
    mt_nlog(l, "engine: %s", msg);
}

static int write_port_file(const mt_server *s, const char *path) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fprintf(f, "listen=%s\nhttp=%s\n", s->listen_addr, s->http_addr[0] ? s->http_addr : "off");
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int setup(mt_server *s, char *err, size_t errlen) {
    const mt_srv_options *o = s->opt;
    if (mt_auth_load(&s->auth, o->token_file, o->admin_token_file, o->limits.max_hello_bytes, err, errlen) != 0)
        return -1;

    const char *root = o->data_root && *o->data_root ? o->data_root : ".";
    struct stat st;
    if (!realpath(root, s->data_root) || stat(s->data_root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "data root %s: %s", root, errno ? strerror(errno) : "not a directory");
        return -1;
    }

    if (o->n_gpus > 0) {
        int count = s->eng->device_count ? s->eng->device_count() : 0;
        for (int i = 0; i < o->n_gpus; i++)
            if (o->gpus[i] >= count) {
                snprintf(err, errlen, "--gpus: device %d is not present (%d CUDA device%s usable)", o->gpus[i], count,
                         count == 1 ? "" : "s");
                return -1;
            }
        s->n_devices = o->n_gpus;
        memcpy(s->devices, o->gpus, sizeof s->devices);
        s->n_workers = (uint32_t)o->n_gpus;
        s->kernel_threads = 0;
    } else {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        s->n_devices = 0;
        s->n_workers = o->threads;
        s->kernel_threads = (int)(ncpu > (long)o->threads ? ncpu / (long)o->threads : 1);
    }

    if (evthread_use_pthreads() != 0) {
        snprintf(err, errlen, "libevent has no pthreads support");
        return -1;
    }
    s->base = event_base_new();
    s->batcher = mt_srv_batcher_new(o->max_batch_tokens, o->max_batch_sentences, o->max_wait_ms);
    if (!s->base || !s->batcher || mt_post_init(s) != 0 || mt_srv_train_init(s) != 0 || mt_drain_init(s) != 0) {
        snprintf(err, errlen, "out of memory setting up");
        return -1;
    }
    if (o->model && *o->model) {
        mt_eng_err e = {0};
        MT_LOGI("loading %s on %d device(s)%s", o->model, s->n_devices ? s->n_devices : 1,
                s->n_devices ? "" : " (CPU)");
        mt_srv_model *m = mt_srv_model_load_all(s, o->model, &e);
        if (!m) {
            snprintf(err, errlen, "cannot load the model %s: %s: %s", o->model,
                     s->eng->status_str ? s->eng->status_str(e.status) : "?", e.msg);
            return -1;
        }
        mt_srv_model_install(s, m);
    } else {
        MT_LOGW("no --model: translation answers ERR_NO_MODEL until a model is promoted");
    }
    if (o->tls_cert && *o->tls_cert) {
        s->ssl = mt_tls_server_ctx(o->tls_cert, o->tls_key, err, errlen);
        if (!s->ssl) return -1;
    }
    if (mt_listen_start(s, err, errlen) != 0) return -1;
    if (mt_http_start(s, err, errlen) != 0) return -1;
    if (mt_cluster_init(s, err, errlen) != 0) return -1;
    if (mt_workers_start(s) != 0) {
        snprintf(err, errlen, "cannot start the engine workers");
        return -1;
    }
    if (o->port_file && *o->port_file && write_port_file(s, o->port_file) != 0) {
        snprintf(err, errlen, "cannot write the port file %s: %s", o->port_file, strerror(errno));
        return -1;
    }
    return 0;
}

static void teardown(mt_server *s) {
    mt_listen_stop(s);
    mt_http_stop(s);
    if (s->base) mt_conn_free_all(s);
    if (s->batcher) mt_workers_stop(s);
    mt_srv_train_shutdown(s);
    mt_cluster_shutdown(s);
    if (s->post_ev) mt_post_run(s); /* results that came back after the loop ended */
    mt_srv_train_free(s);
    mt_cluster_free(s);
    pthread_mutex_lock(&s->model_mu);
    mt_srv_model *m = s->model;
    s->model = NULL;
    pthread_mutex_unlock(&s->model_mu);
    mt_srv_model_put(s, m);
    mt_drain_free(s);
    mt_post_free(s);
    mt_srv_batcher_free(s->batcher);
    if (s->ssl) SSL_CTX_free(s->ssl);
    if (s->base) event_base_free(s->base);
    pthread_mutex_destroy(&s->model_mu);
}

int mt_server_main(int argc, char **argv, const mt_engine *eng) {
    mt_srv_options opt;
    mt_srv_options_init(&opt);
    char err[1024] = "";
    int rc = mt_srv_options_parse(&opt, argc, argv, err, sizeof err);
    if (rc != 0) {
        if (rc == 2)
            printf("mt-server %s (engine %s: %s)\n", MT_NET_VERSION, eng->name, eng->version ? eng->version() : "?");
        else if (rc < 0)
            fprintf(stderr, "mt-server: %s\n", err);
        mt_srv_options_free(&opt);
        return rc < 0 ? 2 : 0;
    }
    mt_nlog_set_level(opt.log_level);
    if (eng->set_log) eng->set_log(engine_log);
    signal(SIGPIPE, SIG_IGN);

    mt_server *s = calloc(1, sizeof *s);
    if (!s) {
        mt_srv_options_free(&opt);
        return 1;
    }
    s->opt = &opt;
    s->eng = eng;
    mt_metrics_init(&s->metrics);
    g_elog_metrics = &s->metrics;
    pthread_mutex_init(&s->model_mu, NULL);
    s->start_us = mt_now_us();

    if (setup(s, err, sizeof err) != 0) {
        MT_LOGE("%s", err);
        s->exit_code = 1;
    } else {
        MT_LOGI("mt-server %s listening on %s%s%s%s, %u %s worker%s, batches of <= %u tokens / %u sentences, "
                "wait <= %u ms, data root %s%s",
                MT_NET_VERSION, s->listen_addr, s->ssl ? " (TLS)" : "", s->http_addr[0] ? ", http on " : "",
                s->http_addr, s->n_workers, s->n_devices ? "GPU" : "CPU", s->n_workers == 1 ? "" : "s",
                opt.max_batch_tokens, opt.max_batch_sentences, opt.max_wait_ms, s->data_root,
                mt_auth_enabled(&s->auth) ? ", tokens required" : "");
        event_base_dispatch(s->base);
        MT_LOGI("exiting with status %d", s->exit_code);
    }
    if (eng->set_log) eng->set_log(NULL);
    g_elog_metrics = NULL;
    int code = s->exit_code;
    teardown(s);
    free(s);
    mt_srv_options_free(&opt);
    libevent_global_shutdown();
    return code;
}
