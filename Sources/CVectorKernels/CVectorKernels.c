// One source, three builds: VectorBody.h is included once per vector level with that level's target
// attribute; the exported functions pick the build by the level the caller passes (Swift chooses it once
// from CPUID, see Kernels/VectorKernels.swift).
#include "CVectorKernels.h"

// Same operations in the same order at every level: never fuse a multiply and an add.
#pragma clang fp contract(off)

typedef float v16f __attribute__((vector_size(64), aligned(4)));
typedef int v16i __attribute__((vector_size(64), aligned(4)));
typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef double v8d __attribute__((vector_size(64)));

static const float GELU_SCALE = 0.7978845608028654f;   // sqrt(2/π)
static const float GELU_CUBIC = 0.044715f;

#define vsplat(s) ((v16f){0} + (s))
#define vselect(mask, a, b) ((v16f)(((v16i)(a) & (mask)) | ((v16i)(b) & ~(mask))))

// Helpers are inlined into each level's kernels, so passing 64-byte vectors by value costs nothing at
// levels below AVX-512 (the warning is about the calling convention of out-of-line calls).
#pragma clang diagnostic ignored "-Wpsabi"
#define VK_INLINE static inline __attribute__((always_inline))

#define VK_TARGET
#define VK_NAME(f) f##_baseline
#include "VectorBody.h"
#undef VK_TARGET
#undef VK_NAME

#if defined(__x86_64__)
#define VK_TARGET __attribute__((target("avx2,fma")))
#define VK_NAME(f) f##_avx2
#include "VectorBody.h"
#undef VK_TARGET
#undef VK_NAME

#define VK_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
#define VK_NAME(f) f##_avx512
#include "VectorBody.h"
#undef VK_TARGET
#undef VK_NAME

int cvk_max_level(void) { return CVK_AVX512; }
#define DISPATCH(level, f, ...) \
    do { \
        if ((level) >= CVK_AVX512) f##_avx512(__VA_ARGS__); \
        else if ((level) >= CVK_AVX2) f##_avx2(__VA_ARGS__); \
        else f##_baseline(__VA_ARGS__); \
    } while (0)
#define DISPATCH_RETURN(level, f, ...) \
    return (level) >= CVK_AVX512 ? f##_avx512(__VA_ARGS__) \
         : (level) >= CVK_AVX2 ? f##_avx2(__VA_ARGS__) : f##_baseline(__VA_ARGS__)
#else
int cvk_max_level(void) { return CVK_BASELINE; }
#define DISPATCH(level, f, ...) f##_baseline(__VA_ARGS__)
#define DISPATCH_RETURN(level, f, ...) return f##_baseline(__VA_ARGS__)
#endif

void cvk_gelu_forward(int level, float *out, const float *in, long n) {
    DISPATCH(level, gelu_forward, out, in, n);
}
void cvk_gelu_backward_inplace(int level, float *d, const float *inp, long n) {
    DISPATCH(level, gelu_backward_inplace, d, inp, n);
}
void cvk_swiglu_forward(int level, float *out, const float *a, const float *b, long n) {
    DISPATCH(level, swiglu_forward, out, a, b, n);
}
void cvk_swiglu_backward_inplace(int level, float *d, float *db, const float *a, const float *b, long n) {
    DISPATCH(level, swiglu_backward_inplace, d, db, a, b, n);
}
void cvk_adamw(int level, float *param, const float *grad, float *exp_avg, float *exp_avg_sq, long n,
               cvk_adamw_params p) {
    DISPATCH(level, adamw, param, grad, exp_avg, exp_avg_sq, n, p);
}
double cvk_sum_squares(int level, const float *g, long n) {
    DISPATCH_RETURN(level, sum_squares, g, n);
}
float cvk_max(int level, const float *x, long n) {
    DISPATCH_RETURN(level, max, x, n);
}
float cvk_exp_sum(int level, const float *x, float *out, long n, float m) {
    DISPATCH_RETURN(level, exp_sum, x, out, n, m);
}
