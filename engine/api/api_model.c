/*
 * api_model.c — mt_model_*: loading (.mt / .mt.zst, models and checkpoints), saving, inspecting.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api/model_handle.h"
#include "core/alloc.h"
#include "core/error.h"
#include "format/modelfile.h"

mt_status mt_model_load(const char *path, int device, mt_model_t **out) {
    if (!path || !out) return mt_error(MT_ERR_INVALID_ARG, "mt_model_load: NULL argument");
    mt_modelfile mf;
    MT_TRY(mt_modelfile_load(path, device, 0, &mf));
    struct mt_model *m = mt_sys_calloc(1, sizeof *m);
    mt_status st = m ? MT_OK : mt_error(MT_ERR_NOMEM, "mt_model_load: out of memory");
    if (st == MT_OK && mf.tokenizer_json[0]) {
        char where[1100];
        snprintf(where, sizeof where, "%s: __metadata__.tokenizer", path);
        st = mt_tok_load_json(mf.tokenizer_json, strlen(mf.tokenizer_json), where, &m->tok);
        if (st == MT_OK && (int64_t)mt_tok_vocab_size(m->tok) != mf.model->cfg.vocab_size)
            st = mt_error(MT_ERR_FORMAT, "%s: the tokenizer has %zu tokens, the config's vocab_size is %lld", path,
                          mt_tok_vocab_size(m->tok), (long long)mf.model->cfg.vocab_size);
    }
    if (st != MT_OK) {
        if (m) mt_tok_free(m->tok);
        mt_sys_free(m);
        mt_modelfile_clear(&mf);
        return st;
    }
    /* A model loaded through the ABI is for inference (training reads its files itself): pack it. */
    if (st == MT_OK) st = mt_transformer_pack(mf.model);
    if (st != MT_OK) {
        mt_tok_free(m->tok);
        mt_sys_free(m);
        mt_modelfile_clear(&mf);
        return st;
    }
    m->tf = mf.model;
    m->tok_json = mf.tokenizer_json;
    m->device = device;
    mf.model = NULL;
    mf.tokenizer_json = NULL;
    mt_modelfile_clear(&mf);
    *out = m;
    return MT_OK;
}

mt_status mt_model_save(const mt_model_t *m, const char *path) {
    if (!m || !path) return mt_error(MT_ERR_INVALID_ARG, "mt_model_save: NULL argument");
    mt_context *ctx;
    MT_TRY(mt_context_init(&ctx, m->device, 1));
    mt_status st = mt_modelfile_save(path, m->tf, ctx, m->tok_json, NULL);
    mt_context_free(ctx);
    return st;
}

mt_status mt_model_info_json(const mt_model_t *m, char **out_json) {
    if (!m || !out_json) return mt_error(MT_ERR_INVALID_ARG, "mt_model_info_json: NULL argument");
    json_t *o = json_object();
    if (!o) return mt_error(MT_ERR_NOMEM, "mt_model_info_json: out of memory");
    mt_status st = mt_cfg_to_object(&mt_model_config_table, &m->tf->cfg, o);
    const mt_model_config *c = &m->tf->cfg;
    json_object_set_new(o, "parameters", json_integer(mt_transformer_numel(m->tf)));
    json_object_set_new(o, "device", m->device < 0 ? json_string("cpu") : json_integer(m->device));
    json_object_set_new(o, "d_head", json_integer(mt_model_d_head(c)));
    /* Decoder self-attention cache per target token, all layers, f32. */
    json_object_set_new(o, "kv_cache_bytes_per_token",
                        json_integer(4 * mt_model_cache_floats_per_token(c) * c->layers_dec));
    json_object_set_new(o, "tokenizer", json_boolean(m->tok != NULL));
    json_object_set_new(o, "quantization", json_string(m->tf->int8 ? "int8" : "none"));
    char *s = st == MT_OK ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(o);
    if (st != MT_OK) return st;
    if (!s) return mt_error(MT_ERR_NOMEM, "mt_model_info_json: out of memory");
    *out_json = s; /* json_dumps allocates with malloc: mt_free releases it */
    return MT_OK;
}

const mt_tokenizer_t *mt_model_tokenizer(const mt_model_t *m) { return m ? m->tok : NULL; }

void mt_model_free(mt_model_t *m) {
    if (!m) return;
    mt_transformer_free(m->tf);
    mt_tok_free(m->tok);
    mt_sys_free(m->tok_json);
    mt_sys_free(m);
}
