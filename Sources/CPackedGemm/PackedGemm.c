// The micro-kernels of pgemm_multiply, one per vector level, each compiled with its own target attribute
// (the rest of the binary stays baseline x86-64) and chosen by the caller from the CPU's features.
//
// AVX-512: a tile of up to 6 rows by one 64-column panel kept in 24 registers, a broadcast of A times four
// loads of the panel per k. AVX2 + FMA: 16 registers, so a tile of up to 6 rows by one 16-column panel in
// 12 of them, a broadcast times two loads per k (the classic 6 x 16 sgemm tile); its panels are 16 columns
// wide so that a panel is one contiguous stream (16-column strips of a 64-column panel are a cache line
// every 256 bytes, which use a quarter of the L1 sets). While the first tiles of a panel run, they
// prefetch the next panel into L2 (one cache line per k): a panel comes from memory once per product, and
// without the prefetch the first tile of every panel waited for it.
//
// Measured against OpenBLAS 0.3.21 (one thread), weights packed beforehand and too many to stay in cache,
// about 102 rows, K and N of 384..2048: AVX-512 on Emerald Rapids 136-150 GFLOP/s against 97-115
// (Cooperlake kernels; 129-132 without the prefetch), 20 rows 98-101 against 57. AVX2 on Zen 3: see README.
#include "CPackedGemm.h"
#include <string.h>

long pgemm_panel(int kernel) { return kernel >= PGEMM_AVX512 ? 64 : 16; }

long pgemm_packed_floats(int kernel, long K, long N) {
    long w = pgemm_panel(kernel);
    return (N + w - 1) / w * w * K;
}

void pgemm_pack(int kernel, float *dst, const float *b, long K, long N, long rowStride, long colStride) {
    long w = pgemm_panel(kernel);
    for (long n0 = 0; n0 < N; n0 += w) {
        long nn = N - n0 < w ? N - n0 : w;
        float *panel = dst + n0 * K;    // panel p starts at p·w·K
        for (long k = 0; k < K; k++) {
            float *row = panel + k * w;
            const float *src = b + k * rowStride + n0 * colStride;
            if (colStride == 1) memcpy(row, src, (size_t)nn * sizeof(float));
            else for (long j = 0; j < nn; j++) row[j] = src[j * colStride];
            for (long j = nn; j < w; j++) row[j] = 0;
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

// Rows 6, 6, ..., then one tile of the remaining 1-5 with a constant row count, so each tile's loops unroll.
#define PG_ROW_TILES(TILE)          \
    long i = 0;                     \
    for (; i + 6 <= M; i += 6, t++) TILE(6); \
    switch (M - i) {                \
    case 5: TILE(5); break;         \
    case 4: TILE(4); break;         \
    case 3: TILE(3); break;         \
    case 2: TILE(2); break;         \
    case 1: TILE(1); break;         \
    default: break;                 \
    }

// MARK: AVX-512 (64-column panels)

#define PG512_TARGET __attribute__((target("avx512f")))

PG512_TARGET __attribute__((always_inline)) static inline void tile512(const int rows, long K, const float *a, long lda,
                                                                       const float *panel, float *c, long ldc,
                                                                       const __mmask16 *mask, int accumulate,
                                                                       const float *prefetch, long prefetchLines) {
    __m512 acc[6][4];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < 4; v++) acc[r][v] = _mm512_setzero_ps();
    for (long k = 0; k < K; k++) {
        if (k < prefetchLines) _mm_prefetch((const char *)(prefetch + 16 * k), _MM_HINT_T1);
        const float *q = panel + k * 64;
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

PG512_TARGET static void multiply512(long M, long N, long K, const float *a, long lda, const float *packed,
                                     float *c, long ldc, int accumulate, long panelBegin, long panelEnd) {
    for (long p = panelBegin; p < panelEnd; p++) {
        long n0 = p * 64, nn = N - n0 < 64 ? N - n0 : 64;
        if (nn <= 0) break;
        __mmask16 mask[4];
        for (int v = 0; v < 4; v++) {
            long left = nn - 16 * v;
            mask[v] = left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
        }
        const float *panel = packed + n0 * K;
        float *cp = c + n0;
        // The next panel of this call: 4·K lines (16 floats each), K of them by each of the first tiles.
        const float *next = p + 1 < panelEnd && n0 + 64 < N ? panel + 64 * K : 0;
        long lines = next ? 4 * K : 0, t = 0;
#define PG_TILE512(rows) tile512(rows, K, a + i * lda, lda, panel, cp + i * ldc, ldc, mask, accumulate, \
                                 next ? next + t * K * 16 : panel, lines - t * K < K ? lines - t * K : K)
        PG_ROW_TILES(PG_TILE512)
#undef PG_TILE512
    }
}

// MARK: AVX2 + FMA (16-column panels)

#define PG2_TARGET __attribute__((target("avx2,fma")))

PG2_TARGET __attribute__((always_inline)) static inline void tile2(const int rows, long K, const float *a, long lda,
                                                                   const float *panel, float *c, long ldc,
                                                                   __m256i mask0, __m256i mask1, int whole,
                                                                   int accumulate, const float *prefetch,
                                                                   long prefetchLines) {
    __m256 acc[6][2];
    for (int r = 0; r < rows; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (long k = 0; k < K; k++) {
        if (k < prefetchLines) _mm_prefetch((const char *)(prefetch + 16 * k), _MM_HINT_T1);
        const float *q = panel + k * 16;
        __m256 b0 = _mm256_loadu_ps(q), b1 = _mm256_loadu_ps(q + 8);
        for (int r = 0; r < rows; r++) {
            __m256 x = _mm256_broadcast_ss(a + r * lda + k);
            acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < rows; r++) {
        float *p = c + r * ldc;
        __m256 o0 = acc[r][0], o1 = acc[r][1];
        if (whole) {
            if (accumulate) { o0 = _mm256_add_ps(_mm256_loadu_ps(p), o0); o1 = _mm256_add_ps(_mm256_loadu_ps(p + 8), o1); }
            _mm256_storeu_ps(p, o0); _mm256_storeu_ps(p + 8, o1);
        } else {    // the last, partial panel: masked lanes are neither read nor written
            if (accumulate) {
                o0 = _mm256_add_ps(_mm256_maskload_ps(p, mask0), o0);
                o1 = _mm256_add_ps(_mm256_maskload_ps(p + 8, mask1), o1);
            }
            _mm256_maskstore_ps(p, mask0, o0); _mm256_maskstore_ps(p + 8, mask1, o1);
        }
    }
}

PG2_TARGET static void multiply2(long M, long N, long K, const float *a, long lda, const float *packed,
                                 float *c, long ldc, int accumulate, long panelBegin, long panelEnd) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (long p = panelBegin; p < panelEnd; p++) {
        long n0 = p * 16, nn = N - n0 < 16 ? N - n0 : 16;
        if (nn <= 0) break;
        int whole = nn == 16;
        __m256i mask0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nn), lane);        // lane < nn
        __m256i mask1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nn - 8), lane);    // lane + 8 < nn
        const float *panel = packed + n0 * K;
        float *cp = c + n0;
        // The next panel of this call: K lines (16 floats each), all of them by the first tile.
        const float *next = p + 1 < panelEnd && n0 + 16 < N ? panel + 16 * K : 0;
        long t = 0;
#define PG_TILE2(rows) tile2(rows, K, a + i * lda, lda, panel, cp + i * ldc, ldc, mask0, mask1, whole, accumulate, \
                             next ? next : panel, next && t == 0 ? K : 0)
        PG_ROW_TILES(PG_TILE2)
#undef PG_TILE2
    }
}

void pgemm_multiply(int kernel, long M, long N, long K, const float *a, long lda, const float *packed,
                    float *c, long ldc, int accumulate, long panelBegin, long panelEnd) {
    if (kernel >= PGEMM_AVX512) multiply512(M, N, K, a, lda, packed, c, ldc, accumulate, panelBegin, panelEnd);
    else multiply2(M, N, K, a, lda, packed, c, ldc, accumulate, panelBegin, panelEnd);
}

#else   // not x86-64: callers use BLAS (PackedMatmul.best is nil)

void pgemm_multiply(int kernel, long M, long N, long K, const float *a, long lda, const float *packed,
                    float *c, long ldc, int accumulate, long panelBegin, long panelEnd) {
    (void)kernel; (void)M; (void)N; (void)K; (void)a; (void)lda; (void)packed; (void)c; (void)ldc;
    (void)accumulate; (void)panelBegin; (void)panelEnd;
}
#endif
