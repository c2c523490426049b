/*
 * gemm_libs.h — the GEMM libraries of this machine, called directly, as benchmark anchors.
 *
 * `mt-bench ops` compares the engine's GEMM with the fastest library the machine has, and `mt-bench
 * train` divides the engine's FLOP rate by the machine's GEMM peak; both take their anchors from
 * here. oneDNN is linked (it is the engine's own GEMM library); OpenBLAS and BLIS are opened with
 * dlopen when installed (their cblas_sgemm symbols would clash if both were linked), each with its
 * own threads, as a user calling it would run it.
 */
#ifndef MT_BENCH_GEMM_LIBS_H
#define MT_BENCH_GEMM_LIBS_H

#include <stdint.h>

#define MTB_GEMM_LIBS_MAX 3

/* Finds the libraries (once); returns how many there are (oneDNN is always one). */
int mtb_gemm_libs(void);
/* Library i's name with its version and the kernel it chose ("OpenBLAS 0.3.21 (core Cooperlake)"). */
const char *mtb_gemm_lib_name(int i);
/* Short name for JSON ("onednn", "openblas", "blis"). */
const char *mtb_gemm_lib_key(int i);
/* C (M,N) = op(A) (M,K) op(B) (K,N), row-major, f32, on `threads` threads of the library's own. */
void mtb_gemm_lib_run(int i, int threads, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float *C, int64_t ldc);
/* The machine's f32 GEMM peak on `threads` threads: the best GFLOP/s of any library on a 2048^3
 * product (compute-bound on any CPU), measured for about `seconds`; *lib gets the library's index. */
double mtb_gemm_peak(int threads, double seconds, int *lib);

#endif
