// Single-precision products against a right-hand matrix packed once and used many times: an expert's
// weights are multiplied by the rows routed to it once per recurrent iteration, so packing them once per
// pass (instead of inside every BLAS call) saves the packing and lets the product read one contiguous stream.
#ifndef C_PACKED_GEMM_H
#define C_PACKED_GEMM_H

/// Columns per panel of a packed matrix.
#define PGEMM_PANEL 64

/// Floats a packed [K, N] matrix takes: ceil(N / 64) panels of K x 64 (zero-padded).
long pgemm_packed_floats(long K, long N);

/// Packs B[K, N] into `dst` (pgemm_packed_floats(K, N) floats, 64-byte aligned): element (k, n) is read
/// at b[k * rowStride + n * colStride], so colStride 1 packs a row-major [K, N] matrix and rowStride 1
/// packs the transpose of a row-major [N, K] one.
void pgemm_pack(float *dst, const float *b, long K, long N, long rowStride, long colStride);

/// C[M, N] = A[M, K] · B (or C += with `accumulate`), A row-major with row stride lda, B packed by
/// pgemm_pack, C row-major with row stride ldc; only panels [panelBegin, panelEnd) (columns
/// 64·panelBegin ..< min(N, 64·panelEnd)), so threads can split the columns. Each C element is one sum
/// over k = 0 ..< K in order (fused multiply-adds from zero, then added to C), whatever M, the tile or the
/// panel split: the same row gives the same bits wherever it sits. x86-64 with AVX-512 F only.
void pgemm_multiply(long M, long N, long K, const float *a, long lda, const float *packed,
                    float *c, long ldc, int accumulate, long panelBegin, long panelEnd);

#endif
