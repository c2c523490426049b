/*
 * mt-bench.c — `mt-bench <ops|tokenizer|train|decode|serve|dist> [options]`: dispatches to a sub-benchmark.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

typedef int (*bench_fn)(int, char **);

int main(int argc, char **argv) {
    struct {
        const char *name;
        bench_fn fn;
        const char *what;
    } benches[] = {
        {"ops", mt_bench_ops, "matmul and elementwise/softmax/norm throughput vs the fastest GEMM library and memcpy"},
        {"tokenizer", mt_bench_tokenizer, "BPE training time and encode MB/s"},
        {"train", mt_bench_train, "training tokens/s vs the PyTorch reference model"},
        {"decode", mt_bench_decode, "greedy/beam decoding tokens/s vs PyTorch decoding loops"},
        {"serve", mt_bench_serve, "load generator against a running mt-server"},
        {"dist", mt_bench_dist, "data parallel: all-reduce vs raw TCP, 2 ranks vs 1, overlap, RSS vs PyTorch"},
    };
    int n = (int)(sizeof benches / sizeof benches[0]);
    if (argc >= 2) {
        for (int i = 0; i < n; i++) {
            if (strcmp(argv[1], benches[i].name) != 0) continue;
            if (!benches[i].fn) {
                fprintf(stderr, "mt-bench: '%s' is not part of this build\n", argv[1]);
                return 2;
            }
            return benches[i].fn(argc - 1, argv + 1);
        }
        fprintf(stderr, "mt-bench: unknown benchmark '%s'\n", argv[1]);
    }
    fprintf(stderr, "usage: mt-bench <benchmark> [options]\n");
    for (int i = 0; i < n; i++) fprintf(stderr, "  %-10s %s\n", benches[i].name, benches[i].what);
    return 2;
}
