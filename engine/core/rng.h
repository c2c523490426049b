/*
 * rng.h — the one seeded counter-based generator (Philox4x32-10), shared by the CPU and CUDA backends.
 *
 * Random number i of a draw is a pure function of (seed, offset + i), so a kernel can produce any
 * element independently (in parallel, on any device) and the two backends produce identical streams.
 * A context's generator state is just (seed, offset): saved in checkpoints, a resumed run draws the
 * same numbers as an uninterrupted one. Each draw of n numbers advances offset by n rounded up to 4.
 */
#ifndef MT_CORE_RNG_H
#define MT_CORE_RNG_H

#include <math.h>
#include <stdint.h>

#include "core/hostdev.h"


typedef struct mt_philox_out {
    uint32_t v[4];
} mt_philox_out;

/* Philox4x32-10 (Salmon et al., SC'11): counter (c0..c3), key (k0, k1). */
MT_HD mt_philox_out mt_philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    mt_philox_out o = {{c0, c1, c2, c3}};
    return o;
}

/* The 32 random bits of element `index` of the stream (seed, ·): block index/4, lane index%4. */
MT_HD uint32_t mt_rng_bits(uint64_t seed, uint64_t index) {
    uint64_t block = index >> 2;
    mt_philox_out o = mt_philox4x32((uint32_t)block, (uint32_t)(block >> 32), 0u, 0u, (uint32_t)seed,
                                    (uint32_t)(seed >> 32));
    return o.v[index & 3];
}

/* Uniform in [0, 1) with 24 bits. */
MT_HD float mt_rng_uniform(uint64_t seed, uint64_t index) {
    return (float)(mt_rng_bits(seed, index) >> 8) * (1.0f / 16777216.0f);
}

/* Standard normal by Box-Muller over two uniform streams (counter lanes 2 and 3 of the same block,
 * the c2 word set to 1 so they never coincide with mt_rng_bits' stream). */
MT_HD float mt_rng_normal(uint64_t seed, uint64_t index) {
    mt_philox_out o = mt_philox4x32((uint32_t)index, (uint32_t)(index >> 32), 1u, 0u, (uint32_t)seed,
                                    (uint32_t)(seed >> 32));
    float u1 = ((float)(o.v[0] >> 8) + 1.0f) * (1.0f / 16777216.0f); /* (0, 1] */
    float u2 = (float)(o.v[1] >> 8) * (1.0f / 16777216.0f);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
}

#endif
