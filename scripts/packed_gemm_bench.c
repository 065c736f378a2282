// Expert-shaped products, one thread: the packed kernel (CPackedGemm) against OpenBLAS sgemm with W as
// stored (NN) and transposed (NT), the weights of 16 experts cycled so they are not cache-resident (as in
// training); thread CPU time, so other jobs on the machine inflate it less than wall time. Medians and
// ranges of 9 repetitions in GFLOP/s, then the single-thread sgemm peak (2048³) of the kernel set in use.
//   clang -O3 -o /tmp/packed_gemm_bench scripts/packed_gemm_bench.c Sources/CPackedGemm/PackedGemm.c \
//       -ISources/CPackedGemm/include $(pkg-config --cflags --libs openblas)
//   OPENBLAS_NUM_THREADS=1 /tmp/packed_gemm_bench 1      # 1: AVX2 kernel, 2: AVX-512 kernel
//   (OPENBLAS_CORETYPE=Haswell chooses the BLAS kernel set to compare with)
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <cblas.h>
#include "CPackedGemm.h"
static double now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmp(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
    int kernel = argc > 1 ? atoi(argv[1]) : 1;
    long shapes[][3] = {{102, 384, 1024}, {102, 1024, 384}, {20, 384, 1024}, {20, 1024, 384}, {102, 2048, 512}};
    const int EX = 16, REPS = 9;
    if (kernel != PGEMM_AVX2 && kernel != PGEMM_AVX512) { fprintf(stderr, "kernel: 1 (AVX2) or 2 (AVX-512)\n"); return 2; }
    for (int s = 0; s < 5; s++) {
        long M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        float *a = aligned_alloc(64, M * K * 4), *c = aligned_alloc(64, M * N * 4);
        float **w = malloc(EX * sizeof(float *)), **p = malloc(EX * sizeof(float *));
        for (long i = 0; i < M * K; i++) a[i] = (float)rand() / (float)RAND_MAX - 0.5f;
        for (int e = 0; e < EX; e++) {
            w[e] = aligned_alloc(64, K * N * 4);
            for (long i = 0; i < K * N; i++) w[e][i] = (float)rand() / (float)RAND_MAX - 0.5f;
            p[e] = aligned_alloc(64, pgemm_packed_floats(kernel, K, N) * 4 + 64);
            pgemm_pack(kernel, p[e], w[e], K, N, N, 1);
        }
        double flops = 2.0 * M * N * K * EX, t[3][REPS];
        for (int r = 0; r < REPS; r++) {
            double t0 = now();
            for (int e = 0; e < EX; e++) pgemm_multiply(kernel, M, N, K, a, K, p[e], c, N, 0, 0, (N + pgemm_panel(kernel) - 1) / pgemm_panel(kernel));
            double t1 = now();
            for (int e = 0; e < EX; e++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, a, K, w[e], N, 0, c, N);
            double t2 = now();   // NT: the same product with W stored [N,K] (input-gradient products' · Wᵀ)
            for (int e = 0; e < EX; e++) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, a, K, w[e], K, 0, c, N);
            double t3 = now();
            t[0][r] = flops / (t1 - t0) * 1e-9; t[1][r] = flops / (t2 - t1) * 1e-9; t[2][r] = flops / (t3 - t2) * 1e-9;
        }
        for (int i = 0; i < 3; i++) qsort(t[i], REPS, sizeof(double), cmp);
        printf("M %4ld K %4ld N %4ld  packed %6.1f [%5.1f-%5.1f]  blas NN %6.1f [%5.1f-%5.1f]  blas NT %6.1f [%5.1f-%5.1f] GFLOP/s\n",
               M, K, N, t[0][REPS/2], t[0][0], t[0][REPS-1], t[1][REPS/2], t[1][0], t[1][REPS-1], t[2][REPS/2], t[2][0], t[2][REPS-1]);
    }
    // sgemm peak: a large square product
    long n = 2048; float *A = aligned_alloc(64, n*n*4), *B = aligned_alloc(64, n*n*4), *C = aligned_alloc(64, n*n*4);
    for (long i = 0; i < n*n; i++) { A[i] = 0.5f; B[i] = 0.25f; }
    double best = 0;
    for (int r = 0; r < 5; r++) { double t0 = now(); cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, A, n, B, n, 0, C, n); double g = 2.0*n*n*n/(now()-t0)*1e-9; if (g > best) best = g; }
    printf("sgemm 2048^3 best %.1f GFLOP/s (%s)\n", best, openblas_get_corename());
    return 0;
}
