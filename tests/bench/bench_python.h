/*
 * bench_python.h — which Python runs a benchmark's PyTorch side: the first of $MT_TORCH_PYTHON, the
 * benchmark venv made by tests/bench/venv.sh (current PyTorch 2.x from PyPI, with its own MKL/oneDNN
 * kernels: the anchor a user would pick) at $MT_BENCH_VENV or ~/.cache/microtensor/bench-venv, and
 * Debian's /usr/bin/python3 (PyTorch 1.13, the fallback) that is executable and passes a check (one
 * line of Python that exits 0). Shared by mt-bench (bench_model.h) and mt-bench-gpu (bench_gpu.cu).
 */
#ifndef MT_BENCH_PYTHON_H
#define MT_BENCH_PYTHON_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* The interpreter, or NULL with why (when given) naming the candidates tried. */
static inline const char *mtb_python_where(const char *check, char *why, size_t cap) {
    static char found[600];
    char venv[512];
    const char *home = getenv("HOME"), *v = getenv("MT_BENCH_VENV");
    if (v && *v) snprintf(venv, sizeof venv, "%s/bin/python", v);
    else snprintf(venv, sizeof venv, "%s/.cache/microtensor/bench-venv/bin/python", home && *home ? home : "/root");
    const char *cand[3] = {getenv("MT_TORCH_PYTHON"), venv, "/usr/bin/python3"};
    for (int i = 0; i < 3; i++) {
        if (!cand[i] || !*cand[i] || access(cand[i], X_OK) != 0) continue;
        char cmd[1400];
        snprintf(cmd, sizeof cmd, "'%s' -c '%s' >/dev/null 2>&1", cand[i], check);
        if (system(cmd) == 0) {
            snprintf(found, sizeof found, "%s", cand[i]);
            return found;
        }
    }
    if (why) snprintf(why, cap, "no interpreter passes '%s' ($MT_TORCH_PYTHON, %s, /usr/bin/python3)", check, venv);
    return NULL;
}

#endif
