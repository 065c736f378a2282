// The kernels' bodies, included once per vector level by CVectorKernels.c with
//   VK_TARGET: the function attribute naming the level's extensions (empty for the baseline)
//   VK_NAME(f): the level's name for f.
// Vectors are 16 floats at every level; the compiler splits them into the level's registers
// (4 SSE, 2 AVX2 or 1 AVX-512), so each lane sees the same operations whatever the level.

/// The c ≤ 16 floats at p; a short last group is padded with zeros (its extra lanes are computed, never stored).
VK_TARGET VK_INLINE v16f VK_NAME(load)(const float *p, long c) {
    v16f x = {0};
    if (c == 16) __builtin_memcpy(&x, p, sizeof x);
    else __builtin_memcpy(&x, p, (unsigned long)c * sizeof(float));
    return x;
}

VK_TARGET VK_INLINE void VK_NAME(store)(float *p, long c, v16f x) {
    if (c == 16) __builtin_memcpy(p, &x, sizeof x);
    else __builtin_memcpy(p, &x, (unsigned long)c * sizeof(float));
}

/// e^x: x = k·ln2 + r with |r| ≤ ln2/2, e^r by the Cephes expf polynomial (about 1 ulp), scaled by 2^k
/// through the exponent bits. Inputs are clamped to [−87.3, 88.3] so that results stay normal; NaN stays NaN.
VK_TARGET VK_INLINE v16f VK_NAME(exp)(v16f x) {
    v16f lo = vsplat(-87.3f), hi = vsplat(88.3f);
    x = vselect(x < lo, lo, x);
    x = vselect(x > hi, hi, x);
    // k = round(x / ln2) by the 1.5·2^23 trick: the sum's low mantissa bits hold k
    v16f magic = vsplat(12582912.0f);
    v16f t = x * 1.44269504088896341f + magic;
    v16f k = t - magic;
    v16f r = x - k * 0.693359375f + k * 2.12194440e-4f;            // ln2 split in two (Cody-Waite)
    v16f p = vsplat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    v16f y = p * (r * r) + r + 1.0f;
    v16i bits = ((v16i)t - 0x4B400000 + 127) << 23;
    return y * (v16f)bits;
}

/// σ(y) = 1/(1 + e^(−y)).
VK_TARGET VK_INLINE v16f VK_NAME(sigmoid)(v16f y) {
    return 1.0f / (1.0f + VK_NAME(exp)(-y));
}

/// σ(2u) for gelu, u = sqrt(2/π)(x + 0.044715x³): 0.5(1 + tanh u).
VK_TARGET VK_INLINE v16f VK_NAME(gelu_sigma)(v16f x) {
    v16f u = GELU_SCALE * (x + GELU_CUBIC * (x * x * x));
    return VK_NAME(sigmoid)(2.0f * u);
}

/// silu'(x) = σ(x)(1 + x(1 − σ(x))), given sig = σ(x).
VK_TARGET VK_INLINE v16f VK_NAME(silu_derivative)(v16f x, v16f sig) {
    return sig * (1.0f + x * (1.0f - sig));
}

/// gelu'(x) = s + 2x·s(1 − s)·sqrt(2/π)(1 + 3·0.044715x²), s = σ(2u).
VK_TARGET VK_INLINE v16f VK_NAME(gelu_derivative)(v16f x) {
    v16f s = VK_NAME(gelu_sigma)(x);
    v16f x2 = x * x;
    v16f du = GELU_SCALE * (1.0f + (3.0f * GELU_CUBIC) * x2);
    v16f ds = 2.0f * x * s * (1.0f - s);
    return s + ds * du;
}

VK_TARGET static void VK_NAME(gelu_forward)(float *out, const float *in, long n) {
    for (long i = 0; i < n; i += 16) {
        long c = n - i < 16 ? n - i : 16;
        v16f x = VK_NAME(load)(in + i, c);
        VK_NAME(store)(out + i, c, x * VK_NAME(gelu_sigma)(x));
    }
}

/// d = d · gelu'(inp), in place: each vector is loaded before it is stored.
VK_TARGET static void VK_NAME(gelu_backward_inplace)(float *d, const float *inp, long n) {
    for (long i = 0; i < n; i += 16) {
        long c = n - i < 16 ? n - i : 16;
        v16f g = VK_NAME(load)(d + i, c) * VK_NAME(gelu_derivative)(VK_NAME(load)(inp + i, c));
        VK_NAME(store)(d + i, c, g);
    }
}

VK_TARGET static void VK_NAME(swiglu_forward)(float *out, const float *a, const float *b, long n) {
    for (long i = 0; i < n; i += 16) {
        long c = n - i < 16 ? n - i : 16;
        v16f x = VK_NAME(load)(a + i, c);
        v16f sig = VK_NAME(sigmoid)(x);
        VK_NAME(store)(out + i, c, x * sig * VK_NAME(load)(b + i, c));
    }
}

/// With g = d on entry: d = g · b · silu'(a), db = g · silu(a) (both overwritten).
VK_TARGET static void VK_NAME(swiglu_backward_inplace)(float *d, float *db, const float *a, const float *b, long n) {
    for (long i = 0; i < n; i += 16) {
        long c = n - i < 16 ? n - i : 16;
        v16f x = VK_NAME(load)(a + i, c);
        v16f sig = VK_NAME(sigmoid)(x);
        v16f g = VK_NAME(load)(d + i, c);
        v16f dsilu = VK_NAME(silu_derivative)(x, sig);
        v16f ga = g * VK_NAME(load)(b + i, c) * dsilu, gb = g * x * sig;
        VK_NAME(store)(d + i, c, ga);
        VK_NAME(store)(db + i, c, gb);
    }
}

VK_TARGET static void VK_NAME(adamw)(float *th, const float *g, float *m, float *v, long n, cvk_adamw_params p) {
    const float b1 = p.beta1, b2 = p.beta2, c1 = p.c1, c2 = p.c2, lr = p.lr, eps = p.eps;
    const float wd = p.weight_decay, scale = p.grad_scale;
    const float ob1 = 1.0f - b1, ob2 = 1.0f - b2;
    for (long i = 0; i < n; i += 16) {
        long c = n - i < 16 ? n - i : 16;
        v16f gi = VK_NAME(load)(g + i, c) * scale;
        v16f mi = b1 * VK_NAME(load)(m + i, c) + ob1 * gi;
        v16f vi = b2 * VK_NAME(load)(v + i, c) + ob2 * gi * gi;
        v16f ti = VK_NAME(load)(th + i, c);
        v16f mhat = mi / c1, vhat = vi / c2;
        ti = ti - lr * (mhat / (__builtin_elementwise_sqrt(vhat) + eps) + wd * ti);
        VK_NAME(store)(m + i, c, mi);
        VK_NAME(store)(v + i, c, vi);
        VK_NAME(store)(th + i, c, ti);
    }
}

VK_TARGET static double VK_NAME(sum_squares)(const float *g, long n) {
    v8d acc = {0, 0, 0, 0, 0, 0, 0, 0};
    for (long i = 0; i < n; i += 8) {
        long c = n - i < 8 ? n - i : 8;
        v8f x;
        if (c == 8) __builtin_memcpy(&x, g + i, sizeof x);
        else { x = (v8f){0}; __builtin_memcpy(&x, g + i, (unsigned long)c * sizeof(float)); }
        v8d d = __builtin_convertvector(x, v8d);
        acc = acc + d * d;
    }
    double s = 0;
    for (int j = 0; j < 8; j++) s += acc[j];
    return s;
}

VK_TARGET static float VK_NAME(max)(const float *x, long n) {
    v16f acc = vsplat(x[0]);
    for (long i = 0; i < n; i += 16) {
        long c = n - i < 16 ? n - i : 16;
        v16f v = vsplat(x[0]);                     // a short last group is padded with x[0]
        __builtin_memcpy(&v, x + i, (unsigned long)c * sizeof(float));
        acc = vselect(v > acc, v, acc);
    }
    float m = acc[0];
    for (int j = 1; j < 16; j++) if (acc[j] > m) m = acc[j];
    return m;
}

VK_TARGET static float VK_NAME(exp_sum)(const float *x, float *out, long n, float m) {
    v16f acc = vsplat(0.0f);
    for (long i = 0; i < n; i += 16) {
        long c = n - i < 16 ? n - i : 16;
        v16f e = VK_NAME(exp)(VK_NAME(load)(x + i, c) - m);
        if (out) VK_NAME(store)(out + i, c, e);
        if (c < 16) for (long j = c; j < 16; j++) e[j] = 0.0f;   // padding lanes hold e^(0 − m)
        acc = acc + e;
    }
    float s = 0.0f;
    for (int j = 0; j < 16; j++) s += acc[j];
    return s;
}
