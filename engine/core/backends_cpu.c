/*
 * backends_cpu.c — the table of backends of a build without CUDA: the CPU alone. (A CUDA build has
 * cuda/backends.c instead; the engine finds devices only through this table, core/backend.h.)
 */
#include "core/backend.h"

const mt_backend *const mt_backends[] = {&mt_cpu_backend, NULL};
