/*
 * mma.cuh — the one tensor-core instruction the backend uses, behind a helper of its own so the CPU
 * emulator (tests/gpu/emu) can run the kernels that call it.
 *
 *   mt_mma_bf16_16816(d, a, b)   d (16x8, f32) += a (16x16, bf16, row) . b (16x8, bf16, col)
 *
 * one warp-wide mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (sm_80+), with the PTX ISA's
 * fragment layout. For lane l, g = l / 4 (the group) and t = l % 4 (the thread in the group); each
 * 32-bit register holds two bf16, the lower column (or row, for b) in the low half:
 *   a[0] = A[g][2t, 2t+1]     a[1] = A[g+8][2t, 2t+1]   a[2] = A[g][2t+8, 2t+9]   a[3] = A[g+8][2t+8, 2t+9]
 *   b[0] = B[2t, 2t+1][g]     b[1] = B[2t+8, 2t+9][g]
 *   d[0] = D[g][2t]  d[1] = D[g][2t+1]  d[2] = D[g+8][2t]  d[3] = D[g+8][2t+1]
 * Under the emulator (MT_CUDA_EMU) it is emu_mma_bf16_16816: the lanes exchange their fragments
 * through the warp and each computes its own d with that same layout, in f32.
 *
 * mt_ld_pair(p): the 32-bit pair of bf16 at p (4-byte aligned) from shared memory.
 */
#ifndef MT_CUDA_MMA_CUH
#define MT_CUDA_MMA_CUH

#include <stdint.h>
#include <string.h>

static __device__ __forceinline__ void mt_mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(MT_CUDA_EMU)
    emu_mma_bf16_16816(d, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__)
    __trap(); /* below sm_80: the launcher never selects these kernels there */
#else
    (void)d, (void)a, (void)b;
#endif
}

static __device__ __forceinline__ uint32_t mt_ld_pair(const uint16_t *p) {
#if defined(MT_CUDA_EMU)
    uint32_t u;
    memcpy(&u, p, 4); /* g++: no type punning through the pointer */
    return u;
#else
    return *(const uint32_t *)p;
#endif
}

/* Two f32 rounded to bf16 (round to nearest even, as the CPU's mt_f32_to_bf16), lo in the low half. */
static __device__ __forceinline__ uint32_t mt_pack_bf16(float lo, float hi) {
    return (uint32_t)mt_f32_to_bf16(lo) | ((uint32_t)mt_f32_to_bf16(hi) << 16);
}

#endif
