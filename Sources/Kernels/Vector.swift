// Vector: small reductions shared by the element-wise kernels, written over SIMD8 so they vectorise
// (a plain scalar `sum += a[i] * b[i]` loop cannot be reordered by the compiler).

/// Σ_i a[i]·b[i] over n floats, accumulated in eight Float lanes.
@inline(__always)
public func dotProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
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

/// e^x in eight lanes: x = n·ln2 + r with |r| ≤ ln2/2, e^r by the Cephes expf polynomial (≈ 1 ulp),
/// scaled by 2^n through the exponent bits. Inputs are clamped to [−87.3, 88.3] (results stay normal).
@inline(__always)
func simdExp(_ x: SIMD8<Float>) -> SIMD8<Float> {
    // clamp lane by lane (the generic pointwiseMin/Max were not inlined: a call per vector)
    var xc = x
    for j in 0 ..< 8 { xc[j] = Swift.min(Swift.max(xc[j], -87.3), 88.3) }
    // n = round(x / ln2) by the 1.5·2^23 trick: the sum's low mantissa bits hold n (no float -> int conversion)
    let magic = SIMD8<Float>(repeating: 12582912)
    let t = xc * 1.44269504088896341 + magic
    let n = t - magic
    let r = xc - n * 0.693359375 + n * 2.12194440e-4          // ln2 split in two (Cody-Waite)
    var p = SIMD8<Float>(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    let y = p * (r * r) + r + 1
    let bits = (unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
    return y * unsafeBitCast(bits, to: SIMD8<Float>.self)
}

/// Applies `body` to n floats eight at a time; the last partial group is padded with zeros, so every
/// element goes through the same SIMD code whatever its position (results do not depend on alignment).
@inline(__always)
func forEachSIMD8(_ n: Int, _ body: (Int, Int) -> Void) {
    var i = 0
    while i < n { body(i, min(8, n - i)); i += 8 }
}

@inline(__always)
func load8(_ p: UnsafePointer<Float>, _ i: Int, _ count: Int) -> SIMD8<Float> {
    if count == 8 { return UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) }
    var v = SIMD8<Float>(repeating: 0)
    for j in 0 ..< count { v[j] = p[i + j] }
    return v
}

@inline(__always)
func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>, _ i: Int, _ count: Int) {
    if count == 8 { UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: SIMD8<Float>.self); return }
    for j in 0 ..< count { p[i + j] = v[j] }
}
