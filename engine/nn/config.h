/*
 * config.h — the model's hyper-parameters, and the key-table machinery that parses, overrides,
 * validates and prints every config of the engine (the model's here, the trainer's in train/).
 *
 * A config is a plain struct described by a table of keys (name, kind, offset, range, choices). JSON
 * objects and command-line overrides ("--d_model 512") go through the same table, so an unknown key
 * or a value of the wrong type or out of range is always an error that names the key
 * (MT_ERR_CONFIG). Cross-key consistency (d_model divisible by heads, ...) is checked afterwards by
 * the config's own validate function, which names the keys involved.
 */
#ifndef MT_NN_CONFIG_H
#define MT_NN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "microtensor.h"

/* ---- key tables ---------------------------------------------------------------------------------- */

typedef enum mt_cfg_kind {
    MT_CFG_INT = 0,    /* int64_t */
    MT_CFG_FLOAT = 1,  /* double */
    MT_CFG_BOOL = 2,   /* int (0/1) */
    MT_CFG_STRING = 3, /* char[MT_CFG_STR_MAX] */
    MT_CFG_ENUM = 4,   /* int: index into choices */
    MT_CFG_STRLIST = 5 /* mt_cfg_strlist */
} mt_cfg_kind;

#define MT_CFG_STR_MAX 1024
#define MT_CFG_LIST_MAX 16

typedef struct mt_cfg_strlist {
    int n;
    char item[MT_CFG_LIST_MAX][MT_CFG_STR_MAX];
} mt_cfg_strlist;

typedef struct mt_cfg_key {
    const char *name;
    mt_cfg_kind kind;
    size_t offset;                /* of the field in the config struct */
    double min, max;              /* INT / FLOAT range (inclusive) */
    const char *const *choices;   /* ENUM: NULL-terminated names */
    const char *help;             /* one line for --help and the README */
} mt_cfg_key;

typedef struct mt_cfg_table {
    const char *what; /* "model", "training": for messages */
    const mt_cfg_key *keys;
    int n_keys;
} mt_cfg_table;

/* The key of that name in any of the tables, or NULL; *table_index receives which table. */
const mt_cfg_key *mt_cfg_find(const mt_cfg_table *tables, int n_tables, const char *name, int *table_index);

/* Sets every key present in the JSON object text (MT_ERR_FORMAT with line and column when it does not
 * parse) into the struct of its table (structs[i] for tables[i]). Unknown keys and bad values are
 * MT_ERR_CONFIG naming the key; where names the source ("config.json"). */
mt_status mt_cfg_parse_json(const mt_cfg_table *tables, int n_tables, void *const *structs, const char *json,
                            const char *where);
/* Same, from an already parsed jansson object (json_t *). */
mt_status mt_cfg_parse_object(const mt_cfg_table *tables, int n_tables, void *const *structs, const void *obj,
                              const char *where);
/* One "--key value" override given as strings (value parsed by the key's kind: "true"/"false"/"1"/"0"
 * for booleans, a comma-separated list for string lists). */
mt_status mt_cfg_set_string(const mt_cfg_table *tables, int n_tables, void *const *structs, const char *key,
                            const char *value);
/* Adds every key of the table to a jansson object (json_t *), by its current value. */
mt_status mt_cfg_to_object(const mt_cfg_table *table, const void *st, void *obj);
/* Prints "  --key  help (default)" lines of a table into f (FILE *). */
void mt_cfg_print_help(const mt_cfg_table *table, const void *defaults, void *f);

/* ---- the model config ---------------------------------------------------------------------------- */

typedef enum mt_attn_kind { MT_ATTN_MLA = 0, MT_ATTN_MHA = 1 } mt_attn_kind;
typedef enum mt_act_kind { MT_ACT_RELU = 0, MT_ACT_GELU = 1 } mt_act_kind;

typedef struct mt_model_config {
    int64_t vocab_size;  /* joint source/target vocabulary (0 in a training config: the tokenizer's) */
    int64_t d_model;     /* width of the residual stream */
    int64_t heads;       /* attention heads; d_head = d_model / heads */
    int64_t layers_enc;
    int64_t layers_dec;
    int64_t d_ff;        /* feed-forward hidden width */
    int64_t d_c;         /* MLA: key/value latent width */
    int64_t d_cq;        /* MLA: query latent width */
    int64_t d_rope;      /* MLA: decoupled rotary width per head (even) */
    int attention;       /* mt_attn_kind */
    int activation;      /* mt_act_kind */
    double dropout;      /* residual and embedding dropout */
    int64_t max_len;     /* tokens per side, [SOS]/[EOS] included */
    double rope_base;
    int cross_rope;      /* rotary positions in cross-attention too (target vs source positions) */
    int tie_embeddings;  /* output projection = embedding table */
    double norm_eps;     /* layer norm epsilon (the latents' RMS norms use 1e-6) */
    int64_t pad_id, sos_id, eos_id;
} mt_model_config;

extern const mt_cfg_table mt_model_config_table;

void mt_model_config_default(mt_model_config *c);
/* Cross-key checks: d_model % heads, d_rope even, head dim even for MHA, ... MT_ERR_CONFIG naming the
 * key(s). need_vocab: vocab_size must be set (a model, not a training config). */
mt_status mt_model_config_validate(const mt_model_config *c, int need_vocab);
/* The config as JSON text (mt_sys_free it). */
mt_status mt_model_config_to_json(const mt_model_config *c, char **out);
/* A model config from JSON text holding exactly the model keys (as stored in a model file). */
mt_status mt_model_config_from_json(const char *json, const char *where, mt_model_config *c);

static inline int64_t mt_model_d_head(const mt_model_config *c) { return c->d_model / c->heads; }
/* Floats of latent cache per token per attention layer: d_c + d_rope for MLA, 2 * d_model for MHA. */
int64_t mt_model_cache_floats_per_token(const mt_model_config *c);

#endif
