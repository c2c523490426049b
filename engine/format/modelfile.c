/*
 * modelfile.c — saving and loading model and checkpoint files (see modelfile.h): device tensors go
 * through host copies into the safetensors writer; loading verifies format, checksum, config and
 * every parameter's shape before any weight reaches the device.
 */
#include "format/modelfile.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/quant.h"

/* Fills entries e (the I8 weight) and e + 1 (its scales) for linear weight p of an int8 model, from
 * its int8 form when it has one, else by quantizing its f32 host copy f. */
static mt_status save_int8(const mt_tensor *p, const float *f, int8_t *q, float *scale, char *scale_name,
                           mt_st_tensor *e) {
    int64_t n = p->shape[0], k = p->shape[1];
    if (p->qw) {
        memcpy(q, p->qw->q, (size_t)(n * k));
        memcpy(scale, p->qw->scale, sizeof(float) * (size_t)n);
    } else {
        for (int64_t i = 0; i < n; i++) scale[i] = mt_quantize_row(f + i * k, k, 127, q + i * k);
    }
    e[0].dtype = MT_DTYPE_I8;
    e[0].bytes = (size_t)(n * k);
    e[0].data = q;
    snprintf(scale_name, 80, "%s" MT_MODELFILE_SCALE_SUFFIX, p->name);
    e[1] = (mt_st_tensor){.name = scale_name, .dtype = MT_DTYPE_F32, .ndim = 1, .shape = {n},
                          .data = scale, .bytes = sizeof(float) * (size_t)n};
    return MT_OK;
}

mt_status mt_modelfile_save(const char *path, const mt_transformer *m, mt_context *ctx, const char *tokenizer_json,
                            const mt_ckpt_save *ck) {
    return mt_modelfile_save_at(AT_FDCWD, path, m, ctx, tokenizer_json, ck);
}

mt_status mt_modelfile_save_at(int dirfd, const char *path, const mt_transformer *m, mt_context *ctx,
                               const char *tokenizer_json, const mt_ckpt_save *ck) {
    if (!path || !m || !ctx) return mt_error(MT_ERR_INVALID_ARG, "save: NULL argument");
    if (m->int8 && ck)
        return mt_error(MT_ERR_UNSUPPORTED, "save %s: an int8 model has no checkpoint (it is for inference only)",
                        path);
    int np = m->n_params, nt = np * (ck && ck->opt_m ? 3 : 1), nlin = 0;
    size_t qbytes = 0;
    for (int i = 0; m->int8 && i < np; i++)
        if (mt_param_is_linear(m, m->params[i])) {
            nlin++;
            qbytes += (((size_t)m->params[i]->numel + 3) & ~(size_t)3) + sizeof(float) * (size_t)m->params[i]->shape[0];
        }
    mt_st_tensor *ts = mt_sys_calloc((size_t)(nt + nlin), sizeof *ts);
    char (*names)[80] = mt_sys_calloc((size_t)(nt + nlin), sizeof *names);
    size_t total = 0;
    for (int i = 0; i < np; i++) total += mt_tensor_bytes(m->params[i]);
    total *= (size_t)(nt / np);
    char *host = mt_sys_malloc(total + qbytes + 1);
    char *cfg = NULL;
    mt_status st = (!ts || !names || !host) ? mt_error(MT_ERR_NOMEM, "save %s: out of memory", path) : MT_OK;
    size_t off = 0, qoff = total;
    int ne = 0;
    for (int k = 0; st == MT_OK && k < nt / np; k++) {
        for (int i = 0; st == MT_OK && i < np; i++) {
            const mt_tensor *p = m->params[i];
            const mt_tensor *src = k == 0 ? p : (k == 1 ? ck->opt_m[i] : ck->opt_v[i]);
            mt_st_tensor *e = &ts[ne];
            if (k == 0) snprintf(names[ne], sizeof names[ne], "%s", p->name);
            else snprintf(names[ne], sizeof names[0], "optimizer.%s.%s", k == 1 ? "m" : "v", p->name);
            e->name = names[ne];
            e->dtype = MT_DTYPE_F32;
            e->ndim = p->ndim;
            memcpy(e->shape, p->shape, sizeof(int64_t) * (size_t)p->ndim);
            e->bytes = mt_tensor_bytes(p);
            e->data = host + off;
            st = mt_copy_to_host(ctx, src, host + off, e->bytes);
            off += e->bytes;
            ne++;
            if (st == MT_OK && m->int8 && mt_param_is_linear(m, p)) {
                int8_t *q = (int8_t *)(host + qoff);
                float *scale = (float *)(host + qoff + (((size_t)p->numel + 3) & ~(size_t)3));
                st = save_int8(p, (const float *)e->data, q, scale, names[ne], e);
                qoff += (((size_t)p->numel + 3) & ~(size_t)3) + sizeof(float) * (size_t)p->shape[0];
                ne++;
            }
        }
    }
    if (st == MT_OK) st = mt_model_config_to_json(&m->cfg, &cfg);
    if (st == MT_OK) {
        char step[32], ver[16];
        snprintf(step, sizeof step, "%" PRId64, ck ? ck->step : (int64_t)0);
        snprintf(ver, sizeof ver, "%d", MT_MODELFILE_VERSION);
        mt_st_meta meta[7] = {{"format", MT_MODELFILE_FORMAT},
                              {"format_version", ver},
                              {"kind", ck ? "checkpoint" : "model"},
                              {"config", cfg},
                              {"tokenizer", tokenizer_json ? tokenizer_json : ""},
                              {"step", step},
                              {"trainer", ck && ck->trainer_json ? ck->trainer_json : "{}"}};
        if (m->int8) meta[5] = (mt_st_meta){"quantization", "int8"};
        st = mt_st_write_at(dirfd, path, ts, ne, meta, ck ? 7 : (m->int8 ? 6 : 5), 1);
        if (st != MT_OK) st = mt_error_prefix(st, "saving %s: ", path);
    }
    mt_sys_free(cfg);
    mt_sys_free(host);
    mt_sys_free(names);
    mt_sys_free(ts);
    return st;
}

void mt_modelfile_clear(mt_modelfile *mf) {
    if (!mf) return;
    mt_transformer_free(mf->model);
    mt_sys_free(mf->tokenizer_json);
    mt_st_free(mf->file);
    memset(mf, 0, sizeof *mf);
}

static int shape_eq(const mt_st_tensor *e, const mt_tensor *t) {
    if (e->ndim != t->ndim) return 0;
    for (int d = 0; d < t->ndim; d++)
        if (e->shape[d] != t->shape[d]) return 0;
    return 1;
}

mt_status mt_modelfile_read_tensor(const mt_st_file *f, const char *name, mt_context *ctx, mt_tensor *dst) {
    const mt_st_tensor *e = mt_st_find(f, name);
    char a[MT_SHAPE_STR], b[MT_SHAPE_STR];
    if (!e) return mt_error(MT_ERR_FORMAT, "%s: tensor '%s' is missing", mt_st_where(f), name);
    if (e->dtype != MT_DTYPE_F32 || !shape_eq(e, dst))
        return mt_error(MT_ERR_FORMAT, "%s: tensor '%s' is %s %s, the config needs %s f32", mt_st_where(f), name,
                        mt_shape_str(a, e->shape, e->ndim), mt_dtype_name(e->dtype),
                        mt_shape_str(b, dst->shape, dst->ndim));
    return mt_copy_from_host(ctx, dst, e->data, e->bytes);
}

/* name is "<linear weight>" MT_MODELFILE_SCALE_SUFFIX. */
static int is_scale_of_linear(const mt_transformer *m, const char *name) {
    size_t n = strlen(name), sl = strlen(MT_MODELFILE_SCALE_SUFFIX);
    char base[80];
    if (n <= sl || n - sl >= sizeof base || strcmp(name + n - sl, MT_MODELFILE_SCALE_SUFFIX) != 0) return 0;
    memcpy(base, name, n - sl);
    base[n - sl] = 0;
    const mt_tensor *p = mt_transformer_param(m, base);
    return p && mt_param_is_linear(m, p);
}

/* An int8 file's linear weight p: I8 (n, k) and its F32 scales (n) -> p = scale * q (f32) and, on the
 * CPU, p's int8 form exactly as stored. */
static mt_status read_int8(const mt_st_file *f, mt_tensor *p, mt_context *ctx) {
    char sname[80], a[MT_SHAPE_STR], b[MT_SHAPE_STR];
    int64_t n = p->shape[0], k = p->shape[1];
    const mt_st_tensor *e = mt_st_find(f, p->name);
    snprintf(sname, sizeof sname, "%s" MT_MODELFILE_SCALE_SUFFIX, p->name);
    const mt_st_tensor *s = mt_st_find(f, sname);
    if (!e) return mt_error(MT_ERR_FORMAT, "%s: tensor '%s' is missing", mt_st_where(f), p->name);
    if (e->dtype != MT_DTYPE_I8 || !shape_eq(e, p))
        return mt_error(MT_ERR_FORMAT, "%s: tensor '%s' is %s %s, the int8 model needs %s i8", mt_st_where(f),
                        p->name, mt_shape_str(a, e->shape, e->ndim), mt_dtype_name(e->dtype),
                        mt_shape_str(b, p->shape, p->ndim));
    if (!s) return mt_error(MT_ERR_FORMAT, "%s: tensor '%s' (the scales of '%s') is missing", mt_st_where(f), sname,
                            p->name);
    if (s->dtype != MT_DTYPE_F32 || s->ndim != 1 || s->shape[0] != n)
        return mt_error(MT_ERR_FORMAT, "%s: tensor '%s' is %s %s, the int8 model needs (%lld) f32", mt_st_where(f),
                        sname, mt_shape_str(a, s->shape, s->ndim), mt_dtype_name(s->dtype), (long long)n);
    const int8_t *q = e->data;
    float *scale = mt_sys_malloc(sizeof(float) * (size_t)n), *w = mt_sys_malloc(sizeof(float) * (size_t)(n * k));
    mt_status st = scale && w ? MT_OK : mt_error(MT_ERR_NOMEM, "%s: out of memory for '%s'", mt_st_where(f), p->name);
    if (st == MT_OK) {
        memcpy(scale, s->data, sizeof(float) * (size_t)n); /* the file's bytes need not be aligned */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < k; j++) w[i * k + j] = scale[i] * (float)q[i * k + j];
        st = mt_copy_from_host(ctx, p, w, sizeof(float) * (size_t)(n * k));
    }
    if (st == MT_OK && p->device == MT_DEVICE_CPU) {
        mt_qweight *qw;
        st = mt_qweight_from_int8(q, scale, n, k, &qw);
        if (st == MT_OK) p->qw = qw;
    }
    mt_sys_free(scale);
    mt_sys_free(w);
    return st;
}

mt_status mt_modelfile_load(const char *path, int device, int keep_file, mt_modelfile *out) {
    if (!path || !out) return mt_error(MT_ERR_INVALID_ARG, "load: NULL argument");
    memset(out, 0, sizeof *out);
    mt_st_file *f = NULL;
    mt_status st = mt_st_read(path, &f);
    if (st != MT_OK) return st;
    const char *fmt = mt_st_meta_get(f, "format"), *ver = mt_st_meta_get(f, "format_version");
    const char *cfg_json = mt_st_meta_get(f, "config"), *kind = mt_st_meta_get(f, "kind");
    const char *tok = mt_st_meta_get(f, "tokenizer"), *step = mt_st_meta_get(f, "step");
    mt_context *ctx = NULL;
    if (!fmt || strcmp(fmt, MT_MODELFILE_FORMAT) != 0) {
        st = mt_error(MT_ERR_FORMAT, "%s: not a MicroTensor model file (wrong magic: __metadata__.format is %s%s%s, "
                      "expected \"" MT_MODELFILE_FORMAT "\")", path, fmt ? "\"" : "", fmt ? fmt : "absent",
                      fmt ? "\"" : "");
    } else if (!ver || atoi(ver) < 1 || atoi(ver) > MT_MODELFILE_VERSION) {
        st = mt_error(MT_ERR_FORMAT, "%s: format_version %s is not one this engine reads (1..%d)", path,
                      ver ? ver : "(absent)", MT_MODELFILE_VERSION);
    } else if (!cfg_json) {
        st = mt_error(MT_ERR_FORMAT, "%s: __metadata__.config is missing", path);
    }
    if (st == MT_OK) st = mt_st_verify_sha256(f);
    mt_model_config cfg;
    if (st == MT_OK) {
        char where[600];
        snprintf(where, sizeof where, "%s: __metadata__.config", path);
        st = mt_model_config_from_json(cfg_json, where, &cfg);
    }
    const char *quant = mt_st_meta_get(f, "quantization");
    int int8 = quant && strcmp(quant, "int8") == 0;
    if (st == MT_OK && quant && !int8)
        st = mt_error(MT_ERR_UNSUPPORTED, "%s: __metadata__.quantization \"%s\" is not one this engine reads "
                      "(int8)", path, quant);
    if (st == MT_OK) st = mt_transformer_create(&cfg, device, &out->model);
    if (st == MT_OK) st = mt_context_init(&ctx, device, 1);
    /* Every tensor of the file must be a parameter, an int8 weight's scales or, in a checkpoint,
     * optimizer state. */
    for (int i = 0; st == MT_OK && i < mt_st_count(f); i++) {
        const char *name = mt_st_get(f, i)->name;
        if (!mt_transformer_param(out->model, name) && strncmp(name, "optimizer.", 10) != 0 &&
            !(int8 && is_scale_of_linear(out->model, name)))
            st = mt_error(MT_ERR_FORMAT, "%s: tensor '%s' is not a parameter of this config", path, name);
    }
    for (int i = 0; st == MT_OK && i < out->model->n_params; i++) {
        mt_tensor *p = out->model->params[i];
        st = int8 && mt_param_is_linear(out->model, p) ? read_int8(f, p, ctx)
                                                        : mt_modelfile_read_tensor(f, p->name, ctx, p);
    }
    if (st == MT_OK && int8) st = mt_transformer_quantize(out->model);
    if (st == MT_OK) {
        out->tokenizer_json = mt_sys_strdup(tok ? tok : "");
        if (!out->tokenizer_json) st = mt_error(MT_ERR_NOMEM, "%s: out of memory", path);
        out->is_checkpoint = kind && strcmp(kind, "checkpoint") == 0;
        out->step = step ? strtoll(step, NULL, 10) : 0;
    }
    mt_context_free(ctx);
    if (st == MT_OK && keep_file) {
        out->file = f;
        f = NULL;
    }
    mt_st_free(f);
    if (st != MT_OK) mt_modelfile_clear(out);
    return st;
}
