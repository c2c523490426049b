/*
 * config.c — key tables (JSON, command-line overrides, printing) and the model config: its keys,
 * defaults and cross-key validation.
 */
#include "nn/config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

const mt_cfg_key *mt_cfg_find(const mt_cfg_table *tables, int n_tables, const char *name, int *table_index) {
    for (int t = 0; t < n_tables; t++)
        for (int k = 0; k < tables[t].n_keys; k++)
            if (strcmp(tables[t].keys[k].name, name) == 0) {
                if (table_index) *table_index = t;
                return &tables[t].keys[k];
            }
    return NULL;
}

static const char *json_kind_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static mt_status set_int(const mt_cfg_key *k, void *st, int64_t v, const char *where) {
    if ((double)v < k->min || (double)v > k->max)
        return mt_error(MT_ERR_CONFIG, "%s: config key '%s' = %lld is out of range [%.0f, %.0f]", where, k->name,
                        (long long)v, k->min, k->max);
    *(int64_t *)((char *)st + k->offset) = v;
    return MT_OK;
}

static mt_status set_float(const mt_cfg_key *k, void *st, double v, const char *where) {
    if (!isfinite(v) || v < k->min || v > k->max)
        return mt_error(MT_ERR_CONFIG, "%s: config key '%s' = %g is out of range [%g, %g]", where, k->name, v, k->min,
                        k->max);
    *(double *)((char *)st + k->offset) = v;
    return MT_OK;
}

static mt_status set_str(const mt_cfg_key *k, char *dst, const char *v, const char *where) {
    size_t n = strlen(v);
    if (n >= MT_CFG_STR_MAX)
        return mt_error(MT_ERR_CONFIG, "%s: config key '%s': value longer than %d bytes", where, k->name,
                        MT_CFG_STR_MAX - 1);
    memcpy(dst, v, n + 1);
    return MT_OK;
}

static mt_status set_enum(const mt_cfg_key *k, void *st, const char *v, const char *where) {
    for (int i = 0; k->choices[i]; i++)
        if (strcmp(k->choices[i], v) == 0) {
            *(int *)((char *)st + k->offset) = i;
            return MT_OK;
        }
    char list[256] = "";
    for (int i = 0; k->choices[i]; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, k->choices[i], sizeof list - strlen(list) - 1);
    }
    return mt_error(MT_ERR_CONFIG, "%s: config key '%s' = '%s' is not one of: %s", where, k->name, v, list);
}

static mt_status set_json(const mt_cfg_key *k, void *st, const json_t *v, const char *where) {
    switch (k->kind) {
    case MT_CFG_INT:
        if (json_is_integer(v)) return set_int(k, st, (int64_t)json_integer_value(v), where);
        if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 9e15)
            return set_int(k, st, (int64_t)json_real_value(v), where);
        break;
    case MT_CFG_FLOAT:
        if (json_is_number(v)) return set_float(k, st, json_number_value(v), where);
        break;
    case MT_CFG_BOOL:
        if (json_is_boolean(v)) {
            *(int *)((char *)st + k->offset) = json_is_true(v);
            return MT_OK;
        }
        if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1)) {
            *(int *)((char *)st + k->offset) = (int)json_integer_value(v);
            return MT_OK;
        }
        break;
    case MT_CFG_STRING:
        if (json_is_string(v)) return set_str(k, (char *)st + k->offset, json_string_value(v), where);
        if (json_is_null(v)) {
            ((char *)st + k->offset)[0] = 0;
            return MT_OK;
        }
        break;
    case MT_CFG_ENUM:
        if (json_is_string(v)) return set_enum(k, st, json_string_value(v), where);
        break;
    case MT_CFG_STRLIST: {
        mt_cfg_strlist *l = (mt_cfg_strlist *)((char *)st + k->offset);
        if (json_is_string(v)) {
            l->n = 1;
            return set_str(k, l->item[0], json_string_value(v), where);
        }
        if (json_is_array(v)) {
            if (json_array_size(v) > MT_CFG_LIST_MAX)
                return mt_error(MT_ERR_CONFIG, "%s: config key '%s': more than %d entries", where, k->name,
                                MT_CFG_LIST_MAX);
            l->n = 0;
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e) {
                if (!json_is_string(e))
                    return mt_error(MT_ERR_CONFIG, "%s: config key '%s': entry %zu is %s, expected a string", where,
                                    k->name, i, json_kind_name(e));
                MT_TRY(set_str(k, l->item[l->n], json_string_value(e), where));
                l->n++;
            }
            return MT_OK;
        }
        break;
    }
    }
    static const char *want[] = {"an integer", "a number", "a boolean", "a string", "a string", "a list of strings"};
    return mt_error(MT_ERR_CONFIG, "%s: config key '%s' is %s, expected %s", where, k->name, json_kind_name(v),
                    want[k->kind]);
}

mt_status mt_cfg_parse_object(const mt_cfg_table *tables, int n_tables, void *const *structs, const void *objp,
                              const char *where) {
    const json_t *obj = objp;
    if (!json_is_object(obj)) return mt_error(MT_ERR_CONFIG, "%s: the config must be a JSON object", where);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        int ti = 0;
        const mt_cfg_key *k = mt_cfg_find(tables, n_tables, key, &ti);
        if (!k) return mt_error(MT_ERR_CONFIG, "%s: unknown config key '%s'", where, key);
        MT_TRY(set_json(k, structs[ti], v, where));
    }
    return MT_OK;
}

mt_status mt_cfg_parse_json(const mt_cfg_table *tables, int n_tables, void *const *structs, const char *json,
                            const char *where) {
    if (!json) return mt_error(MT_ERR_INVALID_ARG, "%s: config text is NULL", where);
    json_error_t err;
    json_t *obj = json_loads(json, JSON_REJECT_DUPLICATES, &err);
    if (!obj) return mt_error(MT_ERR_FORMAT, "%s: line %d, column %d: %s", where, err.line, err.column, err.text);
    mt_status st = mt_cfg_parse_object(tables, n_tables, structs, obj, where);
    json_decref(obj);
    return st;
}

mt_status mt_cfg_set_string(const mt_cfg_table *tables, int n_tables, void *const *structs, const char *key,
                            const char *value) {
    int ti = 0;
    const mt_cfg_key *k = mt_cfg_find(tables, n_tables, key, &ti);
    if (!k) return mt_error(MT_ERR_CONFIG, "command line: unknown config key '%s'", key);
    void *st = structs[ti];
    char where[300];
    snprintf(where, sizeof where, "command line (--%s)", key);
    char *end = NULL;
    switch (k->kind) {
    case MT_CFG_INT: {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end)
            return mt_error(MT_ERR_CONFIG, "%s: config key '%s' needs an integer, got '%s'", where, key, value);
        return set_int(k, st, v, where);
    }
    case MT_CFG_FLOAT: {
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end)
            return mt_error(MT_ERR_CONFIG, "%s: config key '%s' needs a number, got '%s'", where, key, value);
        return set_float(k, st, v, where);
    }
    case MT_CFG_BOOL: {
        int *b = (int *)((char *)st + k->offset);
        if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes") || !strcmp(value, "on")) *b = 1;
        else if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no") || !strcmp(value, "off")) *b = 0;
        else return mt_error(MT_ERR_CONFIG, "%s: config key '%s' needs true or false, got '%s'", where, key, value);
        return MT_OK;
    }
    case MT_CFG_STRING: return set_str(k, (char *)st + k->offset, value, where);
    case MT_CFG_ENUM: return set_enum(k, st, value, where);
    case MT_CFG_STRLIST: {
        mt_cfg_strlist *l = (mt_cfg_strlist *)((char *)st + k->offset);
        l->n = 0;
        const char *p = value;
        while (*p) {
            const char *c = strchr(p, ',');
            size_t n = c ? (size_t)(c - p) : strlen(p);
            if (l->n == MT_CFG_LIST_MAX)
                return mt_error(MT_ERR_CONFIG, "%s: config key '%s': more than %d entries", where, key, MT_CFG_LIST_MAX);
            if (n >= MT_CFG_STR_MAX) return mt_error(MT_ERR_CONFIG, "%s: config key '%s': entry too long", where, key);
            memcpy(l->item[l->n], p, n);
            l->item[l->n][n] = 0;
            if (n) l->n++;
            p += n + (c ? 1 : 0);
        }
        return MT_OK;
    }
    }
    return mt_error(MT_ERR_INTERNAL, "config: key '%s' has an unknown kind", key);
}

mt_status mt_cfg_to_object(const mt_cfg_table *table, const void *st, void *objp) {
    json_t *obj = objp;
    for (int i = 0; i < table->n_keys; i++) {
        const mt_cfg_key *k = &table->keys[i];
        const char *p = (const char *)st + k->offset;
        json_t *v = NULL;
        switch (k->kind) {
        case MT_CFG_INT: v = json_integer((json_int_t) * (const int64_t *)p); break;
        case MT_CFG_FLOAT: v = json_real(*(const double *)p); break;
        case MT_CFG_BOOL: v = json_boolean(*(const int *)p); break;
        case MT_CFG_STRING: v = json_string(p); break;
        case MT_CFG_ENUM: v = json_string(k->choices[*(const int *)p]); break;
        case MT_CFG_STRLIST: {
            const mt_cfg_strlist *l = (const mt_cfg_strlist *)p;
            v = json_array();
            for (int j = 0; v && j < l->n; j++) json_array_append_new(v, json_string(l->item[j]));
            break;
        }
        }
        if (!v || json_object_set_new(obj, k->name, v) != 0) return mt_error(MT_ERR_NOMEM, "config: out of memory");
    }
    return MT_OK;
}

void mt_cfg_print_help(const mt_cfg_table *table, const void *defaults, void *fp) {
    FILE *f = fp;
    for (int i = 0; i < table->n_keys; i++) {
        const mt_cfg_key *k = &table->keys[i];
        const char *p = (const char *)defaults + k->offset;
        char def[128];
        switch (k->kind) {
        case MT_CFG_INT: snprintf(def, sizeof def, "%lld", (long long)*(const int64_t *)p); break;
        case MT_CFG_FLOAT: snprintf(def, sizeof def, "%g", *(const double *)p); break;
        case MT_CFG_BOOL: snprintf(def, sizeof def, "%s", *(const int *)p ? "true" : "false"); break;
        case MT_CFG_STRING: snprintf(def, sizeof def, "\"%.100s\"", p); break;
        case MT_CFG_ENUM: snprintf(def, sizeof def, "%s", k->choices[*(const int *)p]); break;
        case MT_CFG_STRLIST: snprintf(def, sizeof def, "%d entries", ((const mt_cfg_strlist *)p)->n); break;
        }
        fprintf(f, "  --%-22s %s (default %s)\n", k->name, k->help, def);
    }
}

/* ---- the model config ---------------------------------------------------------------------------- */

static const char *const attn_choices[] = {"mla", "mha", NULL};
static const char *const act_choices[] = {"relu", "gelu", NULL};

#define MK(name, kind, lo, hi, help) {#name, kind, offsetof(mt_model_config, name), lo, hi, NULL, help}
static const mt_cfg_key model_keys[] = {
    MK(vocab_size, MT_CFG_INT, 0, 1 << 24, "joint vocabulary size (0: the tokenizer's)"),
    MK(d_model, MT_CFG_INT, 1, 65536, "width of the residual stream"),
    MK(heads, MT_CFG_INT, 1, 1024, "attention heads (d_head = d_model / heads)"),
    MK(layers_enc, MT_CFG_INT, 1, 256, "encoder layers"),
    MK(layers_dec, MT_CFG_INT, 1, 256, "decoder layers"),
    MK(d_ff, MT_CFG_INT, 1, 1 << 20, "feed-forward hidden width"),
    MK(d_c, MT_CFG_INT, 1, 65536, "MLA key/value latent width"),
    MK(d_cq, MT_CFG_INT, 1, 65536, "MLA query latent width"),
    MK(d_rope, MT_CFG_INT, 0, 65536, "MLA decoupled rotary width per head (even)"),
    {"attention", MT_CFG_ENUM, offsetof(mt_model_config, attention), 0, 0, attn_choices,
     "attention: mla (latent) or mha (standard multi-head)"},
    {"activation", MT_CFG_ENUM, offsetof(mt_model_config, activation), 0, 0, act_choices,
     "feed-forward activation: relu or gelu"},
    MK(dropout, MT_CFG_FLOAT, 0, 0.95, "dropout on embeddings and residual branches"),
    MK(max_len, MT_CFG_INT, 4, 1 << 20, "maximum tokens per sentence, [SOS]/[EOS] included"),
    MK(rope_base, MT_CFG_FLOAT, 1.0001, 1e9, "rotary embedding base"),
    {"cross_rope", MT_CFG_BOOL, offsetof(mt_model_config, cross_rope), 0, 1, NULL,
     "rotary positions in cross-attention too (false: self-attention only)"},
    {"tie_embeddings", MT_CFG_BOOL, offsetof(mt_model_config, tie_embeddings), 0, 1, NULL,
     "output projection shares the embedding table"},
    MK(norm_eps, MT_CFG_FLOAT, 1e-12, 1e-2, "layer norm epsilon"),
    MK(pad_id, MT_CFG_INT, 0, 1 << 24, "[PAD] id (set from the tokenizer)"),
    MK(sos_id, MT_CFG_INT, 0, 1 << 24, "[SOS] id (set from the tokenizer)"),
    MK(eos_id, MT_CFG_INT, 0, 1 << 24, "[EOS] id (set from the tokenizer)"),
};
#undef MK

const mt_cfg_table mt_model_config_table = {"model", model_keys, (int)(sizeof model_keys / sizeof model_keys[0])};

void mt_model_config_default(mt_model_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 0;
    c->d_model = 256;
    c->heads = 4;
    c->layers_enc = 3;
    c->layers_dec = 3;
    c->d_ff = 1024;
    c->d_c = 128;
    c->d_cq = 128;
    c->d_rope = 32;
    c->attention = MT_ATTN_MLA;
    c->activation = MT_ACT_RELU;
    c->dropout = 0.1;
    c->max_len = 256;
    c->rope_base = 10000.0;
    c->cross_rope = 1;
    c->tie_embeddings = 1;
    c->norm_eps = 1e-5;
    c->pad_id = 0;
    c->sos_id = 2;
    c->eos_id = 3;
}

mt_status mt_model_config_validate(const mt_model_config *c, int need_vocab) {
    if (c->d_model % c->heads != 0)
        return mt_error(MT_ERR_CONFIG, "config: d_model (%lld) is not divisible by heads (%lld)", (long long)c->d_model,
                        (long long)c->heads);
    if (c->attention == MT_ATTN_MLA) {
        if (c->d_rope % 2 != 0)
            return mt_error(MT_ERR_CONFIG, "config: d_rope (%lld) must be even (rotary pairs)", (long long)c->d_rope);
        if (c->d_rope < 2)
            return mt_error(MT_ERR_CONFIG, "config: d_rope (%lld) must be at least 2: MLA's only position signal is "
                            "its rotary part", (long long)c->d_rope);
    } else if (mt_model_d_head(c) % 2 != 0) {
        return mt_error(MT_ERR_CONFIG, "config: d_model / heads (%lld) must be even for rotary embeddings with "
                        "attention mha", (long long)mt_model_d_head(c));
    }
    if (need_vocab && c->vocab_size < 4)
        return mt_error(MT_ERR_CONFIG, "config: vocab_size (%lld) must be at least 4 (the special tokens)",
                        (long long)c->vocab_size);
    if (c->vocab_size > 0) {
        const char *names[3] = {"pad_id", "sos_id", "eos_id"};
        int64_t ids[3] = {c->pad_id, c->sos_id, c->eos_id};
        for (int i = 0; i < 3; i++)
            if (ids[i] >= c->vocab_size)
                return mt_error(MT_ERR_CONFIG, "config: %s (%lld) is not below vocab_size (%lld)", names[i],
                                (long long)ids[i], (long long)c->vocab_size);
        if (c->pad_id == c->sos_id || c->pad_id == c->eos_id || c->sos_id == c->eos_id)
            return mt_error(MT_ERR_CONFIG, "config: pad_id, sos_id and eos_id must differ (%lld, %lld, %lld)",
                            (long long)c->pad_id, (long long)c->sos_id, (long long)c->eos_id);
    }
    return MT_OK;
}

mt_status mt_model_config_to_json(const mt_model_config *c, char **out) {
    json_t *obj = json_object();
    if (!obj) return mt_error(MT_ERR_NOMEM, "config: out of memory");
    mt_status st = mt_cfg_to_object(&mt_model_config_table, c, obj);
    if (st == MT_OK) {
        char *s = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(17));
        if (!s) {
            st = mt_error(MT_ERR_NOMEM, "config: out of memory");
        } else {
            *out = mt_sys_strdup(s);
            free(s);
            if (!*out) st = mt_error(MT_ERR_NOMEM, "config: out of memory");
        }
    }
    json_decref(obj);
    return st;
}

mt_status mt_model_config_from_json(const char *json, const char *where, mt_model_config *c) {
    mt_model_config_default(c);
    void *structs[1] = {c};
    MT_TRY(mt_cfg_parse_json(&mt_model_config_table, 1, structs, json, where));
    mt_status st = mt_model_config_validate(c, 1);
    if (st != MT_OK) return mt_error_prefix(st, "%s: ", where);
    return MT_OK;
}

int64_t mt_model_cache_floats_per_token(const mt_model_config *c) {
    return c->attention == MT_ATTN_MLA ? c->d_c + c->d_rope : 2 * c->d_model;
}
