// Vector: small reductions shared by the element-wise kernels, written over SIMD8 so they vectorise
// (a plain scalar `sum += a[i] * b[i]` loop cannot be reordered by the compiler).

/// Σ_i a[i]·b[i] over n floats, accumulated in eight Float lanes.
@inline(__always)
func dotProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    var i = 0
    while i + 8 <= n {
        let va = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)
        let vb = UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
        acc += va * vb
        i += 8
    }
    var s = acc.sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
}

/// Σ_i a[i]·b[i]·c[i] over n floats, accumulated in eight Float lanes.
@inline(__always)
func dotProduct3(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    var i = 0
    while i + 8 <= n {
        let va = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)
        let vb = UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
        let vc = UnsafeRawPointer(c + i).loadUnaligned(as: SIMD8<Float>.self)
        acc += va * vb * vc
        i += 8
    }
    var s = acc.sum()
    while i < n { s += a[i] * b[i] * c[i]; i += 1 }
    return s
}

/// max_i a[i] over n > 0 floats.
@inline(__always)
func maxElement(_ a: UnsafePointer<Float>, _ n: Int) -> Float {
    var m = a[0]
    for i in 1 ..< max(n, 1) where a[i] > m { m = a[i] }
    return m
}
