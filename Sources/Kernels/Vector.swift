// Vector: small reductions shared by the Swift kernels, written over SIMD8 so they vectorise (a plain scalar
// `sum += a[i] * b[i]` loop cannot be reordered by the compiler), and the threaded sum of squares.
import CVectorKernels

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

/// Σ p[i]² over n floats, in Double, on up to `workers` threads. The sum is cut into at most 64 chunks fixed
/// by n alone (CVectorKernels' `cvk_sum_squares` on each), and the chunks' sums are added in order, so the
/// result is the same for any number of threads and any vector level.
public func sumOfSquares(_ p: UnsafePointer<Float>, _ n: Int, workers: Int = 1) -> Double {
    let chunks = min(64, max(1, n / 65536))
    let W = max(1, min(workers, chunks))
    return withUnsafeTemporaryAllocation(of: Double.self, capacity: 64) { sums in
        let level = VectorKernels.level.rawValue
        Blas.parallel(workers: W) { w in
            for c in Blas.share(w, of: W, items: chunks) {
                let r = Blas.share(c, of: chunks, items: n)
                sums[c] = cvk_sum_squares(level, p + r.lowerBound, r.count)
            }
        }
        var s = 0.0
        for c in 0 ..< chunks { s += sums[c] }
        return s
    }
}
