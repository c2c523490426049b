/*
 * model.h — the encoder–decoder Transformer with Multi-head Latent Attention: its parameters (a
 * registry of named persistent tensors, in file order), their initialisation, and the forward pass
 * written in the op layer (so autograd gives the backward, and any backend runs it).
 *
 * Shapes (letters as in core/tensor.h, plus S source length, d = d_model, dh = d_model / heads,
 * dr = d_rope, dc = d_c, dcq = d_cq):
 *
 *   x = dropout(E[src] * sqrt(d))                                  (B, S, d)
 *   encoder layer (pre-norm):  x += drop(attn(LN1 x, LN1 x, src_mask))
 *                              x += drop(FFN(LN2 x))
 *   memory = LN_enc(x)
 *   y = dropout(E[tgt_in] * sqrt(d))                               (B, T, d)
 *   decoder layer:  y += drop(self_attn(LN1 y, LN1 y, causal))
 *                   y += drop(cross_attn(LN2 y, memory, src_mask))
 *                   y += drop(FFN(LN3 y))
 *   logits = LN_dec(y) @ E^T  (or out_proj^T when untied)           (B, T, V)
 *
 * MLA (DeepSeek-V2), query side h (B,T,d), key side m (B,S,d):
 *   c_q  = RMSNorm(h W_dq^T)                    (B,T,dcq)
 *   q_n  = c_q W_uq^T   per head               (B,H,T,dh)
 *   q_r  = RoPE(c_q W_qr^T per head, pos0)     (B,H,T,dr)
 *   c_kv = RMSNorm(m W_dkv^T)                   (B,S,dc)
 *   k_n  = c_kv W_uk^T  per head               (B,H,S,dh)
 *   v    = c_kv W_uv^T  per head               (B,H,S,dh)
 *   k_r  = RoPE(m W_kr^T, 0)  one for all heads (B,1,S,dr)
 *   o    = softmax([q_n,q_r]·[k_n,k_r]^T / sqrt(dh+dr) + mask) v,  out = o W_o^T
 * MHA: q, k, v = h W_q^T, m W_k^T, m W_v^T per head, RoPE on q and k (full dh), scale 1/sqrt(dh).
 * FFN: act(h W_1^T + b_1) W_2^T + b_2, act = ReLU (default) or exact GELU.
 *
 * Parameter names are PyTorch state_dict names of tests/reference/model.py ("embed.weight",
 * "encoder.layers.0.self_attn.w_dq.weight", ...), so the reference loads a .mt file directly.
 */
#ifndef MT_NN_MODEL_H
#define MT_NN_MODEL_H

#include "nn/config.h"
#include "ops/ops.h"

typedef struct mt_attn_params {
    /* MLA */
    mt_tensor *w_dq;    /* (dcq, d) */
    mt_tensor *q_norm;  /* (dcq) */
    mt_tensor *w_uq;    /* (H*dh, dcq) */
    mt_tensor *w_qr;    /* (H*dr, dcq) */
    mt_tensor *w_dkv;   /* (dc, d) */
    mt_tensor *kv_norm; /* (dc) */
    mt_tensor *w_uk;    /* (H*dh, dc) */
    mt_tensor *w_uv;    /* (H*dh, dc) */
    mt_tensor *w_kr;    /* (dr, d) */
    /* MHA */
    mt_tensor *w_q, *w_k, *w_v; /* (d, d) */
    /* both */
    mt_tensor *w_o;     /* (d, H*dh) */
} mt_attn_params;

typedef struct mt_norm_params {
    mt_tensor *w, *b; /* (d), (d) */
} mt_norm_params;

typedef struct mt_ffn_params {
    mt_tensor *w1, *b1; /* (d_ff, d), (d_ff) */
    mt_tensor *w2, *b2; /* (d, d_ff), (d) */
} mt_ffn_params;

typedef struct mt_layer_params {
    mt_norm_params norm1, norm2, norm3; /* norm3: decoder only */
    mt_attn_params self_attn;
    mt_attn_params cross_attn;          /* decoder only */
    mt_ffn_params ffn;
} mt_layer_params;

typedef enum mt_param_init { MT_INIT_XAVIER = 0, MT_INIT_ONES = 1, MT_INIT_ZEROS = 2 } mt_param_init;

typedef struct mt_transformer {
    mt_model_config cfg;
    int device;
    int n_params;
    mt_tensor **params;      /* (n_params) persistent, requires_grad, name = state_dict name */
    mt_param_init *init;     /* (n_params) */
    mt_tensor *embed;        /* (V, d) */
    mt_tensor *out_proj;     /* (V, d), NULL when tied */
    mt_layer_params *enc;    /* (layers_enc) */
    mt_layer_params *dec;    /* (layers_dec) */
    mt_norm_params enc_norm, dec_norm;
    int int8;                /* linear weights are int8 (nn/quant.c): inference only */
} mt_transformer;

/* Allocates every parameter on device (uninitialised). cfg must validate with a vocab size. */
mt_status mt_transformer_create(const mt_model_config *cfg, int device, mt_transformer **out);
void mt_transformer_free(mt_transformer *m);
/* Xavier-uniform matrices and embeddings, ones for norm weights, zeros for biases, drawn from ctx's
 * generator (seed it first). */
mt_status mt_transformer_init_weights(mt_transformer *m, mt_context *ctx);
/* SHA-256 (hex, NUL-terminated) of every parameter's bytes in parameter order: equal weights, equal
 * text (the data-parallel handshake and the final weights of a run's ranks are compared by it). */
mt_status mt_transformer_weights_sha256(const mt_transformer *m, mt_context *ctx, char hex[65]);
/* The parameter of that name, or NULL. */
mt_tensor *mt_transformer_param(const mt_transformer *m, const char *name);
int64_t mt_transformer_numel(const mt_transformer *m);
/* Zeroes every parameter's gradient (those that have one). */
mt_status mt_transformer_zero_grad(mt_transformer *m, mt_context *ctx);

/* A batch of token ids on the host, padded with pad_id. */
typedef struct mt_seq_batch {
    int64_t B, S, T;
    int32_t *src;     /* (B, S): source ids then [EOS], then padding */
    int32_t *tgt_in;  /* (B, T): [SOS] then target ids, then padding */
    int32_t *tgt_out; /* (B, T): target ids then [EOS], then padding */
    int64_t src_tokens, tgt_tokens; /* non-padding tokens */
} mt_seq_batch;

/* Additive source key mask (B, 1, 1, S): 0 for tokens, -1e9 for padding, from host ids. */
mt_tensor *mt_transformer_src_mask(mt_context *ctx, const mt_transformer *m, const int32_t *src, int64_t B, int64_t S);

/* memory (B, S, d) of src ids (B, S) I32. */
mt_tensor *mt_transformer_encode(mt_context *ctx, const mt_transformer *m, mt_tensor *src, mt_tensor *src_mask,
                                 int training);

/* Projections absorbed for attention in latent space (MLA only), computed once per model and shared
 * read-only by every decoding thread. Per decoder layer, for self- and cross-attention:
 *   aq (H*dc, dcq)        rows h*dc.. = W_uk_h^T W_uq_h: c_q -> the latent query of head h
 *   ao (d, H*(dc+dr))     columns h*(dc+dr).. = [W_o_h W_uv_h, 0]: head outputs -> model width
 * (the zero columns drop the rotary part, since the latent rows double as the values). */
typedef struct mt_absorbed_attn {
    mt_tensor *aq, *ao;
} mt_absorbed_attn;

typedef struct mt_absorbed {
    int64_t layers;
    mt_absorbed_attn *self_attn, *cross_attn; /* (layers) */
} mt_absorbed;

/* NULL *out for MHA models (nothing to absorb). In nn/absorb.c. */
mt_status mt_absorbed_create(const mt_transformer *m, mt_absorbed **out);
void mt_absorbed_free(mt_absorbed *a);

/* The key side of an attention in the form a cache keeps it, for key rows m (B, S, d) at positions
 * pos0..: MLA *k = the latents [c_kv, RoPE(m W_kr^T)] (B, 1, S, dc+dr), *v = NULL (the latents are
 * the values too); MHA *k = the rotated keys (B, H, S, dh), *v = the values (B, H, S, dh). rope 0:
 * no rotation (cross-attention of a model with cross_rope false). */
void mt_attention_kv(mt_context *ctx, const mt_model_config *cfg, const mt_attn_params *a, mt_tensor *m, int64_t pos0,
                     int rope, mt_tensor **k, mt_tensor **v);

/* What incremental decoding keeps between steps, owned by the caller (engine/decode/): the
 * self-attention rows of every position so far, per layer, and the memory side's rows. */
typedef struct mt_decoder_cache {
    /* Writes rows (B, Hk, T, D) of positions pos0.. into the self-attention cache of layer l (which 0:
     * keys or MLA latents, 1: MHA values) and returns the whole cache (P, Hk, C, D): blocks of C >=
     * pos0 + T positions, read through rows; NULL with ctx->status set. */
    mt_tensor *(*append)(void *user, int64_t l, int which, mt_tensor *rows, int64_t pos0);
    void *user;
    mt_tensor *rows; /* (B, pos0 + T) I32: the block of the cache each row reads at each position
                      * (mt_attention_paged; the same for every layer) */
    mt_tensor **cross_k, **cross_v; /* (layers): mt_attention_kv of the memory; cross_v[l] NULL for MLA */
    mt_tensor *cross_rows;          /* (B, S) I32 or NULL: the block (a sentence: the rows of a beam share
                                     * one) of cross_k/v each row reads at each source position; NULL:
                                     * row b reads block b */
} mt_decoder_cache;

/* One decoder layer on y (B, T, d) at positions pos0..: self-attention (causal when T > 1), cross-
 * attention to memory (B, S, d) under src_mask (B, 1, 1, S), FFN. abs (MLA, optional): attend in
 * latent space with the absorbed projections of layer l. cache (optional): the self-attention keys
 * come from the cache, to which this call appends the new rows, and the cross-attention keys from
 * cache->cross_k/v (memory is then unused); an MLA cache needs abs. pos0 > 0 needs a cache; T > 1
 * with a cache needs pos0 = 0. Training calls it without abs or cache. */
mt_tensor *mt_decoder_layer(mt_context *ctx, const mt_transformer *m, int64_t l, mt_tensor *y, mt_tensor *memory,
                            mt_tensor *src_mask, int64_t pos0, const mt_absorbed *abs, const mt_decoder_cache *cache,
                            int training);
/* Final decoder states (B, T, d) of tgt ids (B, T) I32 at positions pos0.. through every decoder layer
 * (abs and cache as mt_decoder_layer; both NULL and pos0 = 0 for training). */
mt_tensor *mt_transformer_decode(mt_context *ctx, const mt_transformer *m, mt_tensor *tgt, int64_t pos0,
                                 mt_tensor *memory, mt_tensor *src_mask, const mt_absorbed *abs,
                                 const mt_decoder_cache *cache, int training);
/* Logits (..., V) of states (..., d). */
mt_tensor *mt_transformer_logits(mt_context *ctx, const mt_transformer *m, mt_tensor *h);
/* The output projection matrix (V, d): the embedding when tied. */
static inline mt_tensor *mt_transformer_out_weight(const mt_transformer *m) {
    return m->out_proj ? m->out_proj : m->embed;
}

/* Mean label-smoothed cross-entropy over the batch's non-padding target tokens (scalar). Only those
 * rows go through the output projection. all_logits, when not NULL, receives the full (B, T, V)
 * logits instead (tests; every row projected). dloss, when not NULL, is the gradient the caller passes
 * to mt_backward from this loss (training): the logits' gradient is then computed with the loss, in
 * their memory (mt_cross_entropy_fused); not with all_logits, which the caller reads. */
mt_tensor *mt_transformer_loss(mt_context *ctx, const mt_transformer *m, const mt_seq_batch *b, float label_smoothing,
                               int training, mt_tensor *dloss, mt_tensor **all_logits);

/* Every projection of the layers goes through this one function (x (..., in) W^T + b): a weight
 * with an int8 form (w->qw, set by mt_transformer_quantize) runs mt_linear_q8, any other mt_linear. */
mt_tensor *mt_layer_linear(mt_context *ctx, mt_tensor *x, mt_tensor *w, mt_tensor *b);
/* The feed-forward block of h (..., d). */
mt_tensor *mt_ffn_block(mt_context *ctx, const mt_model_config *cfg, const mt_ffn_params *f, mt_tensor *h);

/* Dynamic int8 quantization (nn/quant.c). The linear weights are the 2-D parameters other than the
 * embedding (attention and MLA projections, feed-forward, an untied output projection); embeddings,
 * norms and biases stay f32. */
int mt_param_is_linear(const mt_transformer *m, const mt_tensor *p);
/* Marks m int8 (inference only) and, on the CPU, gives every linear weight its int8 form, and the
 * embedding too when it is the (tied) output projection: the lookup keeps reading the f32 table, the
 * logits use the int8 copy. Weights quantize idempotently: quantizing W ~ s q again gives s and q. On
 * a GPU the model runs its (dequantized) f32 weights. */
mt_status mt_transformer_quantize(mt_transformer *m);
/* Gives one CPU weight (n, k) its int8 form (replacing any it had). */
mt_status mt_weight_quantize(mt_tensor *w);
/* For inference only (nn/quant.c): gives every CPU linear weight without an int8 form, and the tied
 * output projection's embedding, its transposed f32 copy (mt_tensor.wt; the f32 weights' memory once
 * more), which mt_linear uses while no gradient is needed: the decoder's products with few rows run
 * at up to 2x the speed of dnnl_sgemm on a weight stored (n, k). The copies are not updated by
 * training: pack a model that is no longer trained (mt_model_load does; the trainer never packs).
 * Nothing on a GPU. */
mt_status mt_transformer_pack(mt_transformer *m);
/* Gives one CPU weight (n, k) its transposed copy (replacing any it had). */
mt_status mt_weight_pack(mt_tensor *w);

/* RMS norm epsilon of the MLA latents (as DeepSeek-V2). */
#define MT_LATENT_NORM_EPS 1e-6f
/* Additive mask value of a padding key. */
#define MT_MASK_NEG (-1e9f)

#endif
