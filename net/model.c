/*
 * model.c — the serving model and its safe swap.
 *
 * A generation holds one engine model per device. The server holds one reference to the current
 * generation; every worker holds one to the generation its translator was made from; the loop holds
 * one briefly while it counts tokens. A promote installs a new generation and kicks the workers:
 * each frees its translator on the old one (after the batch it is running, which finishes on the
 * old model), drops its reference and makes a translator on the new one. The old generation is
 * freed when its last reference goes.
 */
#include "server.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

static void model_destroy(mt_server *s, mt_srv_model *m) {
    for (int i = 0; i < m->n; i++)
        if (m->handles[i]) s->eng->model_free(m->handles[i]);
    MT_LOGI("model generation %llu (%s) freed", (unsigned long long)m->generation, m->path ? m->path : "?");
    free(m->handles);
    free(m->path);
    free(m->info);
    free(m);
}

mt_srv_model *mt_srv_model_load_all(mt_server *s, const char *path, mt_eng_err *err) {
    mt_srv_model *m = calloc(1, sizeof *m);
    int n = s->n_devices > 0 ? s->n_devices : 1;
    if (!m || !(m->handles = calloc((size_t)n, sizeof *m->handles)) || !(m->path = strdup(path))) {
        if (m) {
            free(m->handles);
            free(m);
        }
        err->status = MT_ERR_NOMEM;
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return NULL;
    }
    m->refs = 1;
    for (int i = 0; i < n; i++) {
        int dev = s->n_devices > 0 ? s->devices[i] : MT_DEVICE_CPU;
        if (s->eng->model_load(path, dev, &m->handles[i], err) != 0) {
            m->n = i;
            m->generation = 0;
            model_destroy(s, m);
            return NULL;
        }
        m->n = i + 1;
    }
    m->info = s->eng->model_info ? s->eng->model_info(m->handles[0]) : NULL;
    const char *ml = m->info ? strstr(m->info, "\"max_len\":") : NULL;
    if (ml) m->max_len = (uint32_t)strtoul(ml + 10, NULL, 10);
    return m;
}

void mt_srv_model_install(mt_server *s, mt_srv_model *m) {
    pthread_mutex_lock(&s->model_mu);
    mt_srv_model *old = s->model;
    m->generation = ++s->model_seq;
    s->model = m;
    pthread_mutex_unlock(&s->model_mu);
    MT_LOGI("serving model generation %llu: %s", (unsigned long long)m->generation, m->path);
    mt_srv_model_put(s, old);
    if (s->batcher) mt_srv_batcher_kick(s->batcher);
}

mt_srv_model *mt_srv_model_get(mt_server *s) {
    pthread_mutex_lock(&s->model_mu);
    mt_srv_model *m = s->model;
    if (m) m->refs++;
    pthread_mutex_unlock(&s->model_mu);
    return m;
}

void mt_srv_model_put(mt_server *s, mt_srv_model *m) {
    if (!m) return;
    pthread_mutex_lock(&s->model_mu);
    int left = --m->refs;
    pthread_mutex_unlock(&s->model_mu);
    if (left == 0) model_destroy(s, m);
}
