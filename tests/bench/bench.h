/*
 * bench.h — the sub-benchmarks of mt-bench and their shared helpers.
 *
 * Each sub-benchmark prints a human table and, as its last line, one JSON object with its figures.
 * Every figure is a ratio against an anchor measured in the same run (direct BLAS, memcpy, the PyTorch
 * reference), never a bare time alone.
 */
#ifndef MT_BENCH_H
#define MT_BENCH_H

#include <time.h>

/* Each returns a process exit code. Defined in bench_<name>.c; weak so mt-bench links while a
 * sub-benchmark is not part of the build. */
int mt_bench_ops(int argc, char **argv) __attribute__((weak));
int mt_bench_tokenizer(int argc, char **argv) __attribute__((weak));
int mt_bench_train(int argc, char **argv) __attribute__((weak));
int mt_bench_decode(int argc, char **argv) __attribute__((weak));
int mt_bench_serve(int argc, char **argv) __attribute__((weak));
int mt_bench_dist(int argc, char **argv) __attribute__((weak));

static inline double mt_bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
