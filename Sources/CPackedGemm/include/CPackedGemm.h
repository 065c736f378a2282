// Single-precision products against a right-hand matrix packed once and used many times: an expert's
// weights are multiplied by the rows routed to it once per recurrent iteration, so packing them once per
// pass (instead of inside every BLAS call) saves the packing and lets the product read one contiguous stream.
#ifndef C_PACKED_GEMM_H
#define C_PACKED_GEMM_H

/// Micro-kernels (the CVectorKernels level numbers); a kernel may run only on a CPU with its extensions.
enum {
    PGEMM_AVX2 = 1,     // AVX2 + FMA: tiles of 6 rows x 16 columns in 12 ymm accumulators
    PGEMM_AVX512 = 2,   // AVX-512 F: tiles of 6 rows x 64 columns in 24 zmm accumulators
};

/// Columns per panel of a matrix packed for `kernel` (the width of its tiles): 16 (AVX2) or 64 (AVX-512).
/// The one place the pack layout is decided: packing, sizes and products all ask it.
long pgemm_panel(int kernel);

/// Floats a [K, N] matrix packed for `kernel` takes: ceil(N / panel) panels of K x panel (zero-padded).
long pgemm_packed_floats(int kernel, long K, long N);

/// Packs B[K, N] for `kernel` into `dst` (pgemm_packed_floats floats, 64-byte aligned): panel p holds
/// columns panel·p ..< panel·(p+1), row k of it at dst + p·panel·K + k·panel. Element (k, n) is read at
/// b[k * rowStride + n * colStride], so colStride 1 packs a row-major [K, N] matrix and rowStride 1 packs
/// the transpose of a row-major [N, K] one.
void pgemm_pack(int kernel, float *dst, const float *b, long K, long N, long rowStride, long colStride);

/// C[M, N] = A[M, K] · B (or C += with `accumulate`), A row-major with row stride lda, B packed by
/// pgemm_pack for the same kernel, C row-major with row stride ldc; only panels [panelBegin, panelEnd)
/// (columns panel·panelBegin ..< min(N, panel·panelEnd)), so threads can split the columns. Each C element
/// is one sum over k = 0 ..< K in order (fused multiply-adds from zero, then added to C), whatever M, the
/// tile, the panel split or the kernel: the same row gives the same bits wherever it sits, and both kernels
/// give the same bits. x86-64 only.
void pgemm_multiply(int kernel, long M, long N, long K, const float *a, long lda, const float *packed,
                    float *c, long ldc, int accumulate, long panelBegin, long panelEnd);

#endif
