/*
 * flash_attention.cuh — the bf16 tensor-core attention kernels (flash_attention.cu) as attention.cu's
 * dispatch calls them. Plain C++ declarations; the eligibility test is in mt_cuda.h (tests call it).
 */
#ifndef MT_CUDA_FLASH_ATTENTION_CUH
#define MT_CUDA_FLASH_ATTENTION_CUH

#include "common.cuh"

/* 1 when the context's precision and device let these kernels take an attention call with head dims
 * D, Dv (backward: the two backward kernels), else 0: attention.cu's dispatch. */
int mt_cuda_flash_eligible(const mt_cuda_exec *cx, int precision, int64_t D, int64_t Dv, int backward);
/* out (=), lse (=) as mt_cuda_attention_fwd; q, k, v f32 in device memory, read as bf16. */
mt_status mt_cuda_flash_fwd(mt_cuda_exec *cx, float *out, float *lse, const float *q, const float *k, const float *v,
                            const mt_attn_desc *ad);
/* dq, dk, dv (+=, any may be NULL) as mt_cuda_attention_bwd; Dd[row] = dout[row] . out[row], computed by
 * the caller (attention.cu's prep kernel). */
mt_status mt_cuda_flash_bwd(mt_cuda_exec *cx, float *dq, float *dk, float *dv, const float *dout, const float *Dd,
                            const float *lse, const float *q, const float *k, const float *v, const mt_attn_desc *ad);

#endif
