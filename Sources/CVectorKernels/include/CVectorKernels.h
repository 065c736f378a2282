// CVectorKernels: the trainer's element-wise hot loops (activations, AdamW, exponential sums, maxima, sums of
// squares) in C, built
// once per vector level and chosen at run time. Swift compiles for the baseline x86-64 ISA (SSE2); these
// loops are compute-bound, so the AVX2 and AVX-512 builds run them 2-4x faster on the same source.
//
// Every level performs the same IEEE operations per element in the same order (no FMA contraction, no
// approximate reciprocals), so all levels give the same bits; the tests check that. (A NaN result stays NaN,
// but when two NaN operands meet, which one's sign survives depends on the compiler's operand order.)
#ifndef CVECTORKERNELS_H
#define CVECTORKERNELS_H

/// Vector levels, in increasing order; a level may be used only when the CPU has every extension it names.
enum {
    CVK_BASELINE = 0,   // SSE2, every x86-64 CPU (and any other architecture)
    CVK_AVX2 = 1,       // AVX2 + FMA (FMA is enabled for the build but not used: contraction is off)
    CVK_AVX512 = 2,     // AVX-512 F, BW, DQ, VL
};

/// The highest level this library was built with for this architecture (CVK_BASELINE off x86-64).
int cvk_max_level(void);

// out = gelu(in), tanh form, computed as x·σ(2u), u = sqrt(2/π)(x + 0.044715x³).
void cvk_gelu_forward(int level, float *out, const float *in, long n);
// d = d · gelu'(inp), in place
void cvk_gelu_backward_inplace(int level, float *d, const float *inp, long n);
// out = silu(a) ⊙ b
void cvk_swiglu_forward(int level, float *out, const float *a, const float *b, long n);
// with g = d on entry: d = g·b·σ(a)(1 + a(1 − σ(a))) and db = g·a·σ(a) (both overwritten)
void cvk_swiglu_backward_inplace(int level, float *d, float *db, const float *a, const float *b, long n);

/// AdamW on n elements (SPEC section 4). c1, c2 are the bias corrections 1 − β^t; wd is 0 for tensors
/// without weight decay; each gradient is multiplied by grad_scale first.
typedef struct {
    float beta1, beta2, c1, c2, lr, eps, weight_decay, grad_scale;
} cvk_adamw_params;
void cvk_adamw(int level, float *param, const float *grad, float *exp_avg, float *exp_avg_sq, long n,
               cvk_adamw_params p);

/// Σ g[i]² in Double, in eight lanes (lane j sums the elements i ≡ j mod 8 in order), the lanes then added
/// in order 0..7: the result depends only on n and the data, never on the level.
double cvk_sum_squares(int level, const float *g, long n);

/// max_i x[i] over n ≥ 1 floats; NaN elements are skipped unless x[0] is NaN (as a scalar `x[i] > m` loop).
float cvk_max(int level, const float *x, long n);

/// out[i] = e^(x[i] − m) when out is not NULL (out may alias x); returns Σ e^(x[i] − m) summed in 16 Float
/// lanes (lane j takes the elements i ≡ j mod 16 in order), the lanes then added in order 0..15.
float cvk_exp_sum(int level, const float *x, float *out, long n, float m);

#endif
