// The AVX-512 micro-kernel of pgemm_multiply: a tile of up to 6 rows by one 64-column panel kept in
// 24 registers, a broadcast of A times four loads of the panel per k. While the first tiles of a panel
// run, they prefetch the next panel into L2 (one cache line per k): a panel comes from memory once per
// product, and without the prefetch the first tile of every panel waited for it. Measured against OpenBLAS
// 0.3.21 (Cooperlake kernels, one thread), weights packed beforehand and too many to stay in cache: about
// 102 rows, K and N of 384..2048: 136-150 GFLOP/s against 97-115 (129-132 without the prefetch); 20 rows:
// 98-101 against 57.
#include "CPackedGemm.h"
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

long pgemm_packed_floats(long K, long N) { return (N + PGEMM_PANEL - 1) / PGEMM_PANEL * PGEMM_PANEL * K; }

void pgemm_pack(float *dst, const float *b, long K, long N, long rowStride, long colStride) {
    for (long n0 = 0; n0 < N; n0 += PGEMM_PANEL) {
        long nn = N - n0 < PGEMM_PANEL ? N - n0 : PGEMM_PANEL;
        float *panel = dst + n0 * K;    // panel p starts at p·64·K
        for (long k = 0; k < K; k++) {
            float *row = panel + k * PGEMM_PANEL;
            const float *src = b + k * rowStride + n0 * colStride;
            if (colStride == 1) memcpy(row, src, (size_t)nn * sizeof(float));
            else for (long j = 0; j < nn; j++) row[j] = src[j * colStride];
            for (long j = nn; j < PGEMM_PANEL; j++) row[j] = 0;
        }
    }
}

#define PG_TARGET __attribute__((target("avx512f")))

PG_TARGET __attribute__((always_inline)) static inline void tile(const int rows, long K, const float *a, long lda,
                                                                  const float *panel, float *c, long ldc,
                                                                  const __mmask16 *mask, int accumulate,
                                                                  const float *prefetch, long prefetchLines) {
    __m512 acc[6][4];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_ps();
    for (long k = 0; k < K; k++) {
        if (k < prefetchLines) _mm_prefetch((const char *)(prefetch + 16 * k), _MM_HINT_T1);
        const float *q = panel + k * PGEMM_PANEL;
        __m512 b0 = _mm512_loadu_ps(q), b1 = _mm512_loadu_ps(q + 16), b2 = _mm512_loadu_ps(q + 32), b3 = _mm512_loadu_ps(q + 48);
        for (int r = 0; r < rows; r++) {
            __m512 x = _mm512_set1_ps(a[r * lda + k]);
            acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(x, b2, acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(x, b3, acc[r][3]);
        }
    }
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < 4; v++) {
            float *p = c + r * ldc + 16 * v;
            __m512 out = acc[r][v];
            if (accumulate) out = _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], p), out);
            _mm512_mask_storeu_ps(p, mask[v], out);
        }
}

PG_TARGET void pgemm_multiply(long M, long N, long K, const float *a, long lda, const float *packed,
                              float *c, long ldc, int accumulate, long panelBegin, long panelEnd) {
    for (long p = panelBegin; p < panelEnd; p++) {
        long n0 = p * PGEMM_PANEL, nn = N - n0 < PGEMM_PANEL ? N - n0 : PGEMM_PANEL;
        if (nn <= 0) break;
        __mmask16 mask[4];
        for (int v = 0; v < 4; v++) {
            long left = nn - 16 * v;
            mask[v] = left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
        }
        const float *panel = packed + n0 * K;
        float *cp = c + n0;
        // The next panel of this call: 4·K lines (16 floats each), K of them by each of the first tiles.
        const float *next = p + 1 < panelEnd && n0 + PGEMM_PANEL < N ? panel + PGEMM_PANEL * K : 0;
        long lines = next ? 4 * K : 0, t = 0;
#define PG_TILE(rows) tile(rows, K, a + i * lda, lda, panel, cp + i * ldc, ldc, mask, accumulate, \
                           next ? next + t * K * 16 : panel, lines - t * K < K ? lines - t * K : K)
        long i = 0;
        for (; i + 6 <= M; i += 6, t++) PG_TILE(6);
        switch (M - i) {    // constant row counts, so each tile's loops unroll
        case 5: PG_TILE(5); break;
        case 4: PG_TILE(4); break;
        case 3: PG_TILE(3); break;
        case 2: PG_TILE(2); break;
        case 1: PG_TILE(1); break;
        default: break;
        }
#undef PG_TILE
    }
}

#else   // not x86-64: callers use BLAS (PackedMatmul.isAvailable is false)

long pgemm_packed_floats(long K, long N) { return (N + PGEMM_PANEL - 1) / PGEMM_PANEL * PGEMM_PANEL * K; }
void pgemm_pack(float *dst, const float *b, long K, long N, long rowStride, long colStride) {
    (void)dst; (void)b; (void)K; (void)N; (void)rowStride; (void)colStride;
}
void pgemm_multiply(long M, long N, long K, const float *a, long lda, const float *packed,
                    float *c, long ldc, int accumulate, long panelBegin, long panelEnd) {
    (void)M; (void)N; (void)K; (void)a; (void)lda; (void)packed; (void)c; (void)ldc; (void)accumulate;
    (void)panelBegin; (void)panelEnd;
}
#endif
