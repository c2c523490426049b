/*
 * golden.c — the golden-file reader and the op runner of golden.h.
 */
#include "golden.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct reader {
    const unsigned char *p, *end;
    int bad;
} reader;

static const unsigned char *take(reader *r, size_t n) {
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        return NULL;
    }
    const unsigned char *q = r->p;
    r->p += n;
    return q;
}

static uint64_t take_le(reader *r, int bytes) {
    const unsigned char *q = take(r, (size_t)bytes);
    uint64_t v = 0;
    if (!q) return 0;
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | q[i];
    return v;
}

static void take_str(reader *r, char *dst, size_t cap) {
    size_t n = (size_t)take_le(r, 1);
    const unsigned char *q = take(r, n);
    if (!q || n >= cap) {
        r->bad = 1;
        dst[0] = '\0';
        return;
    }
    memcpy(dst, q, n);
    dst[n] = '\0';
}

int mt_gfile_load(const char *path, mt_gfile *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open", path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(buf);
        snprintf(err, errlen, "%s: cannot read", path);
        return -1;
    }
    fclose(f);
    reader r = {buf, buf + size, 0};
    const unsigned char *magic = take(&r, 4);
    if (!magic || memcmp(magic, "MTG1", 4) != 0) {
        free(buf);
        snprintf(err, errlen, "%s: not a golden file (magic)", path);
        return -1;
    }
    int n = (int)take_le(&r, 4);
    out->cases = calloc((size_t)(n > 0 ? n : 1), sizeof(mt_gcase));
    out->n_cases = n;
    const char *base = strrchr(path, '/');
    snprintf(out->name, sizeof out->name, "%s", base ? base + 1 : path);
    char *dot = strstr(out->name, ".mtg");
    if (dot) *dot = '\0';
    for (int c = 0; c < n && !r.bad; c++) {
        mt_gcase *gc = &out->cases[c];
        take_str(&r, gc->op, sizeof gc->op);
        gc->n_attrs = (int)take_le(&r, 1);
        if (gc->n_attrs > MT_G_MAX_ATTRS) r.bad = 1;
        for (int a = 0; a < gc->n_attrs && !r.bad; a++) {
            take_str(&r, gc->attr_key[a], sizeof gc->attr_key[a]);
            uint64_t bits = take_le(&r, 8);
            memcpy(&gc->attr_val[a], &bits, 8);
        }
        gc->n_tensors = (int)take_le(&r, 1);
        if (gc->n_tensors > MT_G_MAX_TENSORS) r.bad = 1;
        for (int t = 0; t < gc->n_tensors && !r.bad; t++) {
            mt_gtensor *g = &gc->t[t];
            take_str(&r, g->key, sizeof g->key);
            int dt = (int)take_le(&r, 1);
            g->dtype = dt == 3 ? MT_DTYPE_I32 : MT_DTYPE_F32;
            g->ndim = (int)take_le(&r, 1);
            if (g->ndim > MT_MAX_DIMS) {
                r.bad = 1;
                break;
            }
            g->numel = 1;
            for (int d = 0; d < g->ndim; d++) {
                g->shape[d] = (int64_t)take_le(&r, 8);
                g->numel *= g->shape[d];
            }
            const unsigned char *q = take(&r, (size_t)g->numel * 4);
            if (!q) break;
            g->data = malloc((size_t)g->numel * 4);
            memcpy(g->data, q, (size_t)g->numel * 4); /* little-endian host assumed (x86-64, aarch64) */
        }
    }
    free(buf);
    if (r.bad) {
        mt_gfile_free(out);
        snprintf(err, errlen, "%s: truncated or malformed", path);
        return -1;
    }
    return 0;
}

void mt_gfile_free(mt_gfile *f) {
    for (int c = 0; c < f->n_cases && f->cases; c++)
        for (int t = 0; t < f->cases[c].n_tensors; t++) free(f->cases[c].t[t].data);
    free(f->cases);
    memset(f, 0, sizeof *f);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int mt_gdir_list(const char *dir, char ***paths) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0, cap = 64;
    char **v = malloc(sizeof(char *) * (size_t)cap);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".mtg") != 0) continue;
        if (n == cap) v = realloc(v, sizeof(char *) * (size_t)(cap *= 2));
        size_t need = strlen(dir) + len + 2;
        v[n] = malloc(need);
        snprintf(v[n], need, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    qsort(v, (size_t)n, sizeof(char *), cmp_str);
    *paths = v;
    return n;
}

const char *mt_gdir_default(int argc, char **argv) {
    if (argc > 1) return argv[1];
    const char *env = getenv("MT_GOLDEN_DIR");
    if (env && *env) return env;
    return "tests/reference/golden";
}

double mt_gattr(const mt_gcase *c, const char *key, double def) {
    for (int i = 0; i < c->n_attrs; i++)
        if (strcmp(c->attr_key[i], key) == 0) return c->attr_val[i];
    return def;
}

const mt_gtensor *mt_gget(const mt_gcase *c, const char *key) {
    for (int i = 0; i < c->n_tensors; i++)
        if (strcmp(c->t[i].key, key) == 0) return &c->t[i];
    return NULL;
}

int mt_gcase_n_inputs(const mt_gcase *c) {
    int n = 0;
    char key[16];
    for (;;) {
        snprintf(key, sizeof key, "x%d", n);
        if (!mt_gget(c, key)) return n;
        n++;
    }
}

int mt_gcase_has_grads(const mt_gcase *c) { return mt_gget(c, "gy") != NULL; }

mt_tensor *mt_gtensor_make(mt_context *ctx, const mt_gtensor *g) {
    return mt_from_data(ctx, g->dtype, g->ndim, g->shape, g->data);
}

static int op_is(const mt_gcase *c, const char *name) { return strcmp(c->op, name) == 0; }

mt_tensor *mt_run_case(mt_context *ctx, const mt_gcase *c, mt_tensor **xs, int n) {
    static const char *unary[] = {"neg", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu", "silu"};
    static const char *scalar[] = {"add_scalar", "sub_scalar", "mul_scalar", "div_scalar",
                                   "rsub_scalar", "rdiv_scalar", "pow"};
    static const char *binary[] = {"add", "sub", "mul", "div"};
    for (int i = 0; i < 9; i++)
        if (op_is(c, unary[i])) return mt_unary(ctx, (mt_unary_op)i, xs[0]);
    for (int i = 0; i < 7; i++)
        if (op_is(c, scalar[i])) return mt_scalar(ctx, (mt_scalar_op)i, xs[0], (float)mt_gattr(c, "s", 0));
    for (int i = 0; i < 4; i++)
        if (op_is(c, binary[i])) return mt_binary(ctx, (mt_binary_op)i, xs[0], xs[1]);
    if (op_is(c, "sum") || op_is(c, "mean") || op_is(c, "max")) {
        int axes[MT_MAX_DIMS], na = (int)mt_gattr(c, "naxes", 0);
        char key[16];
        for (int i = 0; i < na; i++) {
            snprintf(key, sizeof key, "ax%d", i);
            axes[i] = (int)mt_gattr(c, key, 0);
        }
        mt_reduce_op op = op_is(c, "sum") ? MT_REDUCE_SUM : op_is(c, "mean") ? MT_REDUCE_MEAN : MT_REDUCE_MAX;
        return mt_reduce(ctx, op, xs[0], axes, na, (int)mt_gattr(c, "keepdim", 0));
    }
    if (op_is(c, "argmax")) return mt_argmax(ctx, xs[0], (int)mt_gattr(c, "axis", 0), (int)mt_gattr(c, "keepdim", 0));
    if (op_is(c, "matmul"))
        return mt_matmul(ctx, xs[0], xs[1], (int)mt_gattr(c, "ta", 0), (int)mt_gattr(c, "tb", 0));
    if (op_is(c, "linear")) return mt_linear(ctx, xs[0], xs[1], n > 2 ? xs[2] : NULL);
    if (op_is(c, "softmax")) return mt_softmax(ctx, xs[0], (int)mt_gattr(c, "axis", -1));
    if (op_is(c, "log_softmax")) return mt_log_softmax(ctx, xs[0], (int)mt_gattr(c, "axis", -1));
    if (op_is(c, "layer_norm"))
        return mt_layer_norm(ctx, xs[0], xs[1], n > 2 ? xs[2] : NULL, (float)mt_gattr(c, "eps", 1e-5));
    if (op_is(c, "rms_norm")) return mt_rms_norm(ctx, xs[0], xs[1], (float)mt_gattr(c, "eps", 1e-6));
    if (op_is(c, "embedding")) return mt_embedding(ctx, xs[0], xs[1]);
    if (op_is(c, "masked_fill")) return mt_masked_fill(ctx, xs[0], xs[1], (float)mt_gattr(c, "value", 0));
    if (op_is(c, "cross_entropy"))
        return mt_cross_entropy(ctx, xs[0], xs[1], (float)mt_gattr(c, "eps", 0), (int)mt_gattr(c, "ignore_index", -100));
    if (op_is(c, "attention"))
        return mt_attention(ctx, xs[0], xs[1], xs[2], n > 3 ? xs[3] : NULL, (int)mt_gattr(c, "causal", 0),
                            (float)mt_gattr(c, "scale", 1));
    if (op_is(c, "reshape")) {
        int64_t shape[MT_MAX_DIMS];
        int nd = (int)mt_gattr(c, "ndim", 0);
        char key[16];
        for (int i = 0; i < nd; i++) {
            snprintf(key, sizeof key, "s%d", i);
            shape[i] = (int64_t)mt_gattr(c, key, 1);
        }
        return mt_reshape(ctx, xs[0], nd, shape);
    }
    if (op_is(c, "permute")) {
        int perm[MT_MAX_DIMS];
        char key[16];
        for (int i = 0; i < xs[0]->ndim; i++) {
            snprintf(key, sizeof key, "p%d", i);
            perm[i] = (int)mt_gattr(c, key, i);
        }
        return mt_permute(ctx, xs[0], perm);
    }
    if (op_is(c, "transpose")) return mt_transpose(ctx, xs[0], (int)mt_gattr(c, "a0", 0), (int)mt_gattr(c, "a1", 1));
    if (op_is(c, "narrow"))
        return mt_narrow(ctx, xs[0], (int)mt_gattr(c, "axis", 0), (int64_t)mt_gattr(c, "start", 0),
                         (int64_t)mt_gattr(c, "length", 1));
    if (op_is(c, "concat")) return mt_concat(ctx, xs, n, (int)mt_gattr(c, "axis", 0));
    if (op_is(c, "rope")) return mt_rope(ctx, xs[0], (int64_t)mt_gattr(c, "pos0", 0), (float)mt_gattr(c, "base", 1e4));
    if (op_is(c, "arange"))
        return mt_arange(ctx, mt_gattr(c, "start", 0), mt_gattr(c, "step", 1), (int64_t)mt_gattr(c, "n", 1));
    return mt_fail(ctx, MT_ERR_UNSUPPORTED, "golden: unknown op '%s'", c->op);
}
