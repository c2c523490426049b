/*
 * test_quant.c — dynamic int8 quantization: the int8 linear layer against f32 within the
 * quantization error bound, per-channel and per-row scales on adversarial inputs (an outlier column,
 * all-zero rows), idempotent re-quantization, the int8 model file round trip, and greedy translations
 * of a quantized model equal to the reference int8 implementation (tests/reference/quant_ref.py).
 *
 * The bound: with x ~ sx qx (|x - sx qx| <= sx/2 per element, sx = max|x_row| / QMAX) and
 * w ~ sw qw (|w - sw qw| <= sw/2, sw = max|w_row| / 127), each product satisfies
 *   |x w - sx qx sw qw| <= |x| sw/2 + |w| sx/2 + sx sw/4,
 * so |y - y_q| <= sum_j (|x_j| sw/2 + |w_j| sx/2 + sx sw/4) per output element, plus f32 rounding
 * (1e-5 relative to sum_j |x_j w_j|).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "core/quant.h"
#include "cpu/cpu.h"
#include "decode/decode.h"
#include "format/modelfile.h"
#include "testutil.h"

static float frand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((double)(*s >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

/* y_q = x W^T + b through mt_linear_q8 and y = the f32 product; checks the bound element by element
 * and returns the largest error relative to max |y|. */
static double check_linear(const float *x, int64_t R, const float *w, int64_t N, int64_t K, const float *b, int nt) {
    mt_context *ctx = NULL;
    mt_tensor *wt = NULL;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, nt), MT_OK);
    ctx->grad_enabled = 0;
    assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, 2, (const int64_t[]){N, K}, "w", &wt),
                     MT_OK);
    memcpy(wt->data, w, sizeof(float) * (size_t)(N * K));
    mt_tensor *xt = mt_from_data(ctx, MT_DTYPE_F32, 2, (const int64_t[]){R, K}, x);
    mt_tensor *bt = b ? mt_from_data(ctx, MT_DTYPE_F32, 1, &N, b) : NULL;
    mt_tensor *yf = mt_linear(ctx, xt, wt, bt);
    assert_int_equal(mt_weight_quantize(wt), MT_OK);
    mt_tensor *yq = mt_linear_q8(ctx, xt, wt, bt);
    if (!yf || !yq) fail_msg("linear: %s", mt_last_error());
    int qmax = mt_cpu_qlinear_act_qmax();
    double worst = 0, ymax = 0;
    for (int64_t r = 0; r < R; r++) {
        float amax = 0;
        for (int64_t j = 0; j < K; j++) amax = fmaxf(amax, fabsf(x[r * K + j]));
        double sx = amax / qmax;
        for (int64_t i = 0; i < N; i++) {
            double sw = wt->qw->scale[i], bound = 0, mag = 0;
            for (int64_t j = 0; j < K; j++) {
                double xj = fabs(x[r * K + j]), wj = fabs(w[i * K + j]);
                bound += xj * sw / 2 + wj * sx / 2 + sx * sw / 4;
                mag += xj * wj;
            }
            double e = fabs((double)mt_f32(yq)[r * N + i] - (double)mt_f32(yf)[r * N + i]);
            if (e > bound + 1e-5 * mag + 1e-6)
                fail_msg("y[%lld,%lld]: |int8 - f32| = %g exceeds the bound %g", (long long)r, (long long)i, e, bound);
            worst = fmax(worst, e);
            ymax = fmax(ymax, fabs(mt_f32(yf)[r * N + i]));
        }
    }
    /* The int8 form is exactly what mt_qweight_create makes, and zero rows give the bias exactly. */
    for (int64_t r = 0; r < R; r++) {
        int zero = 1;
        for (int64_t j = 0; j < K; j++) zero &= x[r * K + j] == 0.0f;
        for (int64_t i = 0; zero && i < N; i++) assert_true(mt_f32(yq)[r * N + i] == (b ? b[i] : 0.0f));
    }
    mt_tensor_free(wt);
    mt_context_free(ctx);
    return ymax > 0 ? worst / ymax : 0;
}

static void test_gemm_bound(void **state) {
    (void)state;
    static const int64_t shapes[][3] = {{1, 40, 96},  {7, 40, 96},     {33, 257, 64}, {64, 1024, 256},
                                        {3, 33, 200}, {4, 17, 64},     {2, 130, 1}};
    uint64_t s = 88172645463325252ull;
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        int64_t R = shapes[c][0], N = shapes[c][1], K = shapes[c][2];
        float *x = malloc(sizeof(float) * (size_t)(R * K)), *w = malloc(sizeof(float) * (size_t)(N * K));
        float *b = malloc(sizeof(float) * (size_t)N);
        for (int64_t i = 0; i < R * K; i++) x[i] = frand(&s);
        for (int64_t i = 0; i < N * K; i++) w[i] = frand(&s) * 0.1f;
        for (int64_t i = 0; i < N; i++) b[i] = frand(&s);
        for (int nt = 1; nt <= 2; nt++) {
            double rel = check_linear(x, R, w, N, K, c % 2 ? b : NULL, nt);
            /* random data: far inside the worst case, a few percent of max |y| at most */
            assert_true(rel < 0.05);
        }
        free(x);
        free(w);
        free(b);
    }
}

/* The paths of qgemm.c give the same bits (the int32 sums are exact either way): the VNNI kernel on
 * the packed weight (on a CPU with AVX-512 VNNI) for every row at once, for each row alone (the row
 * blocks' tails), and the portable path (scalar row quantization, oneDNN) for all rows; shapes with
 * tails of every kind (rows past blocks of 6, a last panel of fewer than 64 channels, k not a
 * multiple of 4). On a CPU with AMX, products of 8 rows or more with k a multiple of 64 run on the tile
 * unit (rows past whole tiles of 16, a last panel of 8 channels): the same bits as the VNNI kernel,
 * forced with mt_cpu_qlinear_amx = 0, and as each row alone (which the VNNI kernel multiplies). */
static void test_paths_agree(void **state) {
    (void)state;
    static const int64_t shapes[][3] = {{9, 77, 200}, {13, 130, 37}, {6, 64, 4},   {1, 8000, 256},
                                        {37, 200, 128}, {16, 64, 64},  {8, 8000, 256}};
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        int64_t R = shapes[c][0], N = shapes[c][1], K = shapes[c][2];
        float *x = malloc(sizeof(float) * (size_t)(R * K)), *w = malloc(sizeof(float) * (size_t)(N * K));
        float *b = malloc(sizeof(float) * (size_t)N);
        uint64_t s = 12345;
        for (int64_t i = 0; i < R * K; i++) x[i] = frand(&s);
        for (int64_t i = 0; i < N * K; i++) w[i] = frand(&s);
        for (int64_t i = 0; i < N; i++) b[i] = frand(&s);
        mt_context *ctx;
        mt_tensor *wt, *bt;
        assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 2), MT_OK);
        ctx->grad_enabled = 0;
        assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, 2, (const int64_t[]){N, K}, "w", &wt),
                         MT_OK);
        assert_int_equal(mt_tensor_new_persistent(MT_DEVICE_CPU, MT_DTYPE_F32, 1, &N, "b", &bt), MT_OK);
        memcpy(wt->data, w, sizeof(float) * (size_t)(N * K));
        memcpy(bt->data, b, sizeof(float) * (size_t)N);
        assert_int_equal(mt_weight_quantize(wt), MT_OK);
        mt_tensor *xt = mt_from_data(ctx, MT_DTYPE_F32, 2, (const int64_t[]){R, K}, x);
        mt_tensor *all = mt_linear_q8(ctx, xt, wt, bt);
        mt_cpu_qlinear_portable = 1;
        mt_tensor *port = mt_linear_q8(ctx, xt, wt, bt);
        mt_cpu_qlinear_portable = 0;
        mt_cpu_qlinear_amx = 0;
        mt_tensor *vnni = mt_linear_q8(ctx, xt, wt, bt);
        mt_cpu_qlinear_amx = 1;
        assert_non_null(all);
        assert_non_null(port);
        assert_non_null(vnni);
        assert_memory_equal(all->data, port->data, sizeof(float) * (size_t)(R * N));
        assert_memory_equal(all->data, vnni->data, sizeof(float) * (size_t)(R * N));
        for (int64_t r = 0; r < R; r++) {
            mt_tensor *one = mt_linear_q8(ctx, mt_from_data(ctx, MT_DTYPE_F32, 2, (const int64_t[]){1, K}, x + r * K),
                                          wt, bt);
            assert_non_null(one);
            assert_memory_equal(one->data, mt_f32(all) + r * N, sizeof(float) * (size_t)N);
        }
        mt_tensor_free(wt);
        mt_tensor_free(bt);
        mt_context_free(ctx);
        free(x);
        free(w);
        free(b);
    }
}

static void test_adversarial(void **state) {
    (void)state;
    enum { R = 4, N = 6, K = 32 };
    float x[R * K], w[N * K], b[N];
    uint64_t s = 7;
    for (int i = 0; i < R * K; i++) x[i] = frand(&s);
    for (int i = 0; i < N * K; i++) w[i] = frand(&s);
    for (int i = 0; i < N; i++) b[i] = (float)i;
    x[1 * K + 5] = 1000.0f;                        /* row 1: an outlier column swamps its scale */
    for (int j = 0; j < K; j++) x[2 * K + j] = 0;  /* row 2: all zeros */
    for (int j = 0; j < K; j++) w[3 * K + j] = 0;  /* channel 3: all zeros */
    w[4 * K + 7] = 500.0f;                         /* channel 4: an outlier weight */
    check_linear(x, R, w, N, K, b, 1);
    /* Per channel: the outlier of channel 4 leaves every other channel's scale its own. */
    mt_qweight *q;
    assert_int_equal(mt_qweight_create(w, N, K, &q), MT_OK);
    for (int i = 0; i < N; i++) {
        float amax = 0;
        for (int j = 0; j < K; j++) amax = fmaxf(amax, fabsf(w[i * K + j]));
        assert_true(q->scale[i] == amax / 127.0f);
        int32_t sum = 0;
        for (int j = 0; j < K; j++) sum += q->q[i * K + j];
        assert_int_equal(q->qsum[i], sum);
    }
    assert_true(q->scale[3] == 0.0f);
    for (int j = 0; j < K; j++) assert_int_equal(q->q[3 * K + j], 0);
    assert_int_equal(q->q[4 * K + 7], 127);
    /* Idempotent: quantizing the dequantized weights gives the same q (and the scale within an ulp). */
    float wd[N * K];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < K; j++) wd[i * K + j] = q->scale[i] * (float)q->q[i * K + j];
    mt_qweight *q2;
    assert_int_equal(mt_qweight_create(wd, N, K, &q2), MT_OK);
    assert_memory_equal(q->q, q2->q, (size_t)(N * K));
    for (int i = 0; i < N; i++) assert_true(fabsf(q2->scale[i] - q->scale[i]) <= 2e-7f * q->scale[i]);
    /* Rounding is half to even, values clamp to +-qmax, NaN quantizes to 0 without becoming the scale. */
    float r[6] = {2.5f, -2.5f, 127.0f, 0.5f, NAN, 1.5f};
    int8_t rq[6];
    assert_true(mt_quantize_row(r, 6, 127, rq) == 1.0f);
    assert_int_equal(rq[0], 2);
    assert_int_equal(rq[1], -2);
    assert_int_equal(rq[2], 127);
    assert_int_equal(rq[3], 0);
    assert_int_equal(rq[4], 0);
    assert_int_equal(rq[5], 2);
    free(q);
    free(q2);
}

/* Saves m (int8 when quantized) to path. */
static void save(mt_transformer *m, const char *path) {
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 1), MT_OK);
    if (mt_modelfile_save(path, m, ctx, NULL, NULL) != MT_OK) fail_msg("save: %s", mt_last_error());
    mt_context_free(ctx);
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*n);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void roundtrip(int attention, int tied) {
    char dir[512], p32[600], p8[600], p8b[600];
    assert_int_equal(tu_tmpdir(dir, sizeof dir, "quant"), 0);
    snprintf(p32, sizeof p32, "%s/f32.mt", dir);
    snprintf(p8, sizeof p8, "%s/int8.mt", dir);
    snprintf(p8b, sizeof p8b, "%s/int8b.mt", dir);
    mt_model_config c = tu_tiny_config(attention);
    c.tie_embeddings = tied;
    mt_transformer *m = tu_model(&c, 3);
    assert_non_null(m);
    save(m, p32);
    assert_int_equal(mt_transformer_quantize(m), MT_OK);
    save(m, p8);
    /* The file: linear weights I8 with their F32 scales, the embedding and norms F32. */
    mt_st_file *f;
    assert_int_equal(mt_st_read(p8, &f), MT_OK);
    assert_string_equal(mt_st_meta_get(f, "quantization"), "int8");
    int n_i8 = 0;
    for (int i = 0; i < m->n_params; i++) {
        mt_tensor *p = m->params[i];
        const mt_st_tensor *e = mt_st_find(f, p->name);
        assert_non_null(e);
        char sn[96];
        snprintf(sn, sizeof sn, "%s_scale", p->name);
        if (mt_param_is_linear(m, p)) {
            n_i8++;
            assert_int_equal(e->dtype, MT_DTYPE_I8);
            assert_memory_equal(e->data, p->qw->q, (size_t)p->numel);
            const mt_st_tensor *sc = mt_st_find(f, sn);
            assert_non_null(sc);
            assert_memory_equal(sc->data, p->qw->scale, sizeof(float) * (size_t)p->shape[0]);
        } else {
            assert_int_equal(e->dtype, MT_DTYPE_F32);
            assert_null(mt_st_find(f, sn));
        }
    }
    assert_true(n_i8 > 0);
    mt_st_free(f);
    /* Loading: int8, weights = scale * q, int8 forms as stored (and for the tied output projection). */
    mt_modelfile mf;
    if (mt_modelfile_load(p8, MT_DEVICE_CPU, 0, &mf) != MT_OK) fail_msg("load: %s", mt_last_error());
    assert_true(mf.model->int8);
    for (int i = 0; i < m->n_params; i++) {
        mt_tensor *a = m->params[i], *b = mf.model->params[i];
        if (mt_param_is_linear(m, a)) {
            assert_non_null(b->qw);
            assert_memory_equal(a->qw->q, b->qw->q, (size_t)a->numel);
            assert_memory_equal(a->qw->scale, b->qw->scale, sizeof(float) * (size_t)a->shape[0]);
            for (int64_t r = 0; r < a->shape[0]; r++)
                for (int64_t j = 0; j < a->shape[1]; j++)
                    assert_true(mt_f32(b)[r * a->shape[1] + j] ==
                                a->qw->scale[r] * (float)a->qw->q[r * a->shape[1] + j]);
        } else if (a->ndim == 2) { /* the embedding: f32 as it was; int8 form only as the tied projection */
            assert_memory_equal(a->data, b->data, mt_tensor_bytes(a));
            assert_true(tied ? b->qw != NULL : b->qw == NULL);
        }
    }
    /* Saved again, the same bytes; smaller than the f32 file. */
    save(mf.model, p8b);
    size_t n1, n2, n0;
    char *b1 = slurp(p8, &n1), *b2 = slurp(p8b, &n2), *b0 = slurp(p32, &n0);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    assert_true(n1 < n0);
    free(b0);
    free(b1);
    free(b2);
    /* An int8 model has no checkpoint. */
    mt_context *ctx;
    assert_int_equal(mt_context_init(&ctx, MT_DEVICE_CPU, 1), MT_OK);
    mt_ckpt_save ck = {.step = 1, .trainer_json = "{}"};
    assert_int_equal(mt_modelfile_save(p8b, mf.model, ctx, NULL, &ck), MT_ERR_UNSUPPORTED);
    mt_context_free(ctx);
    /* A scale tensor missing is a format error naming it. */
    assert_int_equal(mt_st_read(p8, &f), MT_OK);
    mt_st_tensor *ts = calloc((size_t)mt_st_count(f), sizeof *ts);
    int nt = 0;
    const char *dropped = NULL;
    for (int i = 0; i < mt_st_count(f); i++) {
        const mt_st_tensor *e = mt_st_get(f, i);
        if (!dropped && strstr(e->name, "_scale")) dropped = e->name;
        else ts[nt++] = *e;
    }
    static const char *keys[] = {"format", "format_version", "kind", "config", "tokenizer", "quantization"};
    mt_st_meta meta[6];
    for (int i = 0; i < 6; i++) meta[i] = (mt_st_meta){keys[i], mt_st_meta_get(f, keys[i])};
    assert_int_equal(mt_st_write(p8b, ts, nt, meta, 6, 1), MT_OK);
    mt_modelfile bad;
    assert_int_equal(mt_modelfile_load(p8b, MT_DEVICE_CPU, 0, &bad), MT_ERR_FORMAT);
    assert_non_null(strstr(mt_last_error(), dropped));
    free(ts);
    mt_st_free(f);
    mt_modelfile_clear(&mf);
    mt_transformer_free(m);
    tu_rmrf(dir);
}

static void test_roundtrip(void **state) {
    (void)state;
    roundtrip(MT_ATTN_MHA, 1);
    roundtrip(MT_ATTN_MLA, 1);
    roundtrip(MT_ATTN_MLA, 0);
}

/* Greedy translations of n random sources by model m (cached, with the absorbed projections). */
static void decode_all(const mt_transformer *m, int32_t **src, int64_t *len, int64_t n, mt_decode_result *r) {
    mt_absorbed *abs = NULL;
    mt_decode_ws *ws = NULL;
    assert_int_equal(mt_absorbed_create(m, &abs), MT_OK);
    assert_int_equal(mt_decode_ws_create(MT_DEVICE_CPU, 2, &ws), MT_OK);
    mt_decode_opts o = mt_decode_opts_default();
    if (mt_decode(ws, m, abs, (const int32_t *const *)src, len, NULL, NULL, n, &o, r) != MT_OK)
        fail_msg("decode: %s", mt_last_error());
    if (abs) { /* an int8 MLA model's absorbed projections are int8 too */
        assert_true(!m->int8 || (abs->self_attn[0].aq->qw && abs->cross_attn[0].ao->qw));
    }
    mt_decode_ws_free(ws);
    mt_absorbed_free(abs);
}

#define NSRC 16

static void test_reference_translations(void **state) {
    (void)state;
    const char *py = getenv("MT_TORCH_PYTHON"), *srcdir = getenv("MT_SOURCE_DIR");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import torch, safetensors' 2>/dev/null", py ? py : "");
    if (!py || !*py || system(cmd) != 0) {
        printf("SKIP: no PyTorch interpreter with safetensors (MT_TORCH_PYTHON)\n");
        skip();
    }
    char dir[512], path[600], sp[600], op[600];
    assert_int_equal(tu_tmpdir(dir, sizeof dir, "quantref"), 0);
    snprintf(path, sizeof path, "%s/int8.mt", dir);
    snprintf(sp, sizeof sp, "%s/src.txt", dir);
    snprintf(op, sizeof op, "%s/out.txt", dir);
    mt_model_config c = tu_tiny_config(MT_ATTN_MHA);
    mt_transformer *m = tu_model(&c, 11);
    assert_non_null(m);
    assert_int_equal(mt_transformer_quantize(m), MT_OK);
    save(m, path);
    mt_transformer_free(m);
    mt_modelfile mf;
    if (mt_modelfile_load(path, MT_DEVICE_CPU, 0, &mf) != MT_OK) fail_msg("load: %s", mt_last_error());
    int32_t *src[NSRC];
    int64_t len[NSRC];
    uint64_t s = 99;
    FILE *f = fopen(sp, "w");
    assert_non_null(f);
    for (int i = 0; i < NSRC; i++) {
        len[i] = 1 + i % 9;
        src[i] = malloc(sizeof(int32_t) * (size_t)len[i]);
        for (int64_t j = 0; j < len[i]; j++) {
            src[i][j] = tu_rand_id(&s, c.vocab_size);
            fprintf(f, "%s%d", j ? " " : "", src[i][j]);
        }
        fprintf(f, "\n");
    }
    fclose(f);
    mt_decode_result r;
    decode_all(mf.model, src, len, NSRC, &r);
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 '%s' '%s/tests/reference/quant_ref.py' '%s' '%s' %d '%s'", py,
             srcdir ? srcdir : ".", path, sp, mt_cpu_qlinear_act_qmax(), op);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
    f = fopen(op, "r");
    assert_non_null(f);
    char line[4096];
    int equal = 0, nonempty = 0;
    for (int i = 0; i < NSRC; i++) {
        assert_non_null(fgets(line, sizeof line, f));
        char mine[4096] = "";
        size_t o = 0;
        for (int64_t j = 0; j < r.len[i]; j++) o += (size_t)snprintf(mine + o, sizeof mine - o, "%s%d", j ? " " : "", r.ids[i][j]);
        line[strcspn(line, "\n")] = 0;
        if (strcmp(line, mine) == 0) equal++;
        else printf("sentence %d: engine [%s], reference [%s]\n", i, mine, line);
        nonempty += r.len[i] > 0;
    }
    fclose(f);
    assert_int_equal(equal, NSRC);
    assert_true(nonempty > NSRC / 2); /* the outputs are real sequences, not all empty */
    mt_decode_result_free(&r);
    for (int i = 0; i < NSRC; i++) free(src[i]);
    mt_modelfile_clear(&mf);
    tu_rmrf(dir);
}

/* MLA: the int8 model (absorbed projections quantized too) decodes, mostly as the f32 model. */
static void test_mla_decodes(void **state) {
    (void)state;
    mt_model_config c = tu_tiny_config(MT_ATTN_MLA);
    mt_transformer *m = tu_model(&c, 5);
    assert_non_null(m);
    int32_t *src[NSRC];
    int64_t len[NSRC];
    uint64_t s = 5;
    for (int i = 0; i < NSRC; i++) {
        len[i] = 2 + i % 7;
        src[i] = malloc(sizeof(int32_t) * (size_t)len[i]);
        for (int64_t j = 0; j < len[i]; j++) src[i][j] = tu_rand_id(&s, c.vocab_size);
    }
    mt_decode_result a, b;
    decode_all(m, src, len, NSRC, &a);
    assert_int_equal(mt_transformer_quantize(m), MT_OK);
    decode_all(m, src, len, NSRC, &b);
    int same_first = 0;
    for (int i = 0; i < NSRC; i++) same_first += a.len[i] > 0 && b.len[i] > 0 && a.ids[i][0] == b.ids[i][0];
    printf("MLA int8: first token as f32 in %d of %d sentences\n", same_first, NSRC);
    assert_true(same_first >= NSRC / 2);
    mt_decode_result_free(&a);
    mt_decode_result_free(&b);
    for (int i = 0; i < NSRC; i++) free(src[i]);
    mt_transformer_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_bound),
        cmocka_unit_test(test_paths_agree),
        cmocka_unit_test(test_adversarial),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_reference_translations),
        cmocka_unit_test(test_mla_decodes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
