/*
 * hostdev.h — MT_HD marks a small function that both backends compile: a device+host function under
 * nvcc, a static inline C function everywhere else. Code written once this way (the random generator,
 * dtype conversions) gives the CPU and the GPU the same bits by construction.
 */
#ifndef MT_CORE_HOSTDEV_H
#define MT_CORE_HOSTDEV_H

#if defined(__CUDACC__)
#define MT_HD __host__ __device__ __forceinline__
#else
#define MT_HD static inline
#endif

#endif
