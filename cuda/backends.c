/*
 * backends.c — the table of backends of a CUDA build: the CPU and the CUDA backend (cuda/backend_cuda.cu).
 * The engine finds devices only through this table (core/backend.h); a build without CUDA has
 * engine/core/backends_cpu.c instead.
 */
#include "core/backend.h"

extern const mt_backend mt_cuda_backend;

const mt_backend *const mt_backends[] = {&mt_cpu_backend, &mt_cuda_backend, NULL};
