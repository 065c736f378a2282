// Rotary position embedding, "rotate half" form (SPEC section 3).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// cos θ and sin θ for θ = t·f_j, f_j = base^(−2j/dh), t in 0..<seqLen, j in 0..<dh/2.
/// Angles are computed in Double and stored as Float, row-major [seqLen, headDim/2].
public struct RopeTable {
    public let seqLen: Int
    public let headDim: Int
    /// cos θ[t, j], [seqLen, headDim/2]
    public let cos: [Float]
    /// sin θ[t, j], [seqLen, headDim/2]
    public let sin: [Float]

    public init(seqLen: Int, headDim: Int, base: Double) {
        precondition(seqLen >= 0 && headDim > 0 && headDim % 2 == 0, "RopeTable: head width must be even and positive")
        self.seqLen = seqLen
        self.headDim = headDim
        let half = headDim / 2
        var c = [Float](repeating: 0, count: seqLen * half)
        var s = [Float](repeating: 0, count: seqLen * half)
        for j in 0 ..< half {
            let f = pow(base, -2.0 * Double(j) / Double(headDim))
            for t in 0 ..< seqLen {
                let theta = Double(t) * f
                c[t * half + j] = Float(libmCos(theta))
                s[t * half + j] = Float(libmSin(theta))
            }
        }
        self.cos = c
        self.sin = s
    }
}

// The struct's `cos`/`sin` properties shadow the C functions inside the initializer.
@inline(__always) private func libmCos(_ x: Double) -> Double { cos(x) }
@inline(__always) private func libmSin(_ x: Double) -> Double { sin(x) }

/// In place on x[B*T, C]: for every head h (columns h·dh ..< (h+1)·dh) at position t,
/// [x1, x2] ← [x1·cos θ − x2·sin θ, x2·cos θ + x1·sin θ], x1/x2 the first/second half of the head.
/// With `workers` > 1 the rows are split over that many threads (the same result).
public func ropeForwardInPlace(_ x: UnsafeMutablePointer<Float>, _ table: RopeTable, _ B: Int, _ T: Int, _ C: Int,
                               _ H: Int, workers: Int = 1) {
    // x is (B,T,C) with C = H·dh; table covers at least T positions of width dh
    ropeApply(x, table, B, T, C, H, sinSign: 1, workers: workers)
}

/// In place on dx[B*T, C]: the transposed rotation (rotation by −θ),
/// [d1, d2] ← [d1·cos θ + d2·sin θ, d2·cos θ − d1·sin θ], the gradient wrt the pre-rope input.
public func ropeBackwardInPlace(_ dx: UnsafeMutablePointer<Float>, _ table: RopeTable, _ B: Int, _ T: Int, _ C: Int,
                                _ H: Int, workers: Int = 1) {
    // dx is (B,T,C) with C = H·dh
    ropeApply(dx, table, B, T, C, H, sinSign: -1, workers: workers)
}

/// Rotation by sinSign·θ of every head's half-pairs.
@inline(__always)
private func ropeApply(_ x: UnsafeMutablePointer<Float>, _ table: RopeTable, _ B: Int, _ T: Int, _ C: Int, _ H: Int,
                       sinSign: Float, workers: Int) {
    let dh = table.headDim
    let half = dh / 2
    precondition(H * dh == C, "rope: C (\(C)) != H (\(H)) × table head width (\(dh))")
    precondition(T <= table.seqLen, "rope: T (\(T)) exceeds the table's seqLen (\(table.seqLen))")
    table.cos.withUnsafeBufferPointer { cosBuf in
        table.sin.withUnsafeBufferPointer { sinBuf in
            Blas.forEachShare(of: B * T, width: C, workers: workers) { rows in
                for bt in rows {
                    let t = bt % T
                    let cs = cosBuf.baseAddress! + t * half
                    let sn = sinBuf.baseAddress! + t * half
                    let row = x + bt * C
                    for h in 0 ..< H {
                        let x1 = row + h * dh
                        let x2 = x1 + half
                        for j in 0 ..< half {
                            let a = x1[j], c = x2[j]
                            let s = sinSign * sn[j]
                            x1[j] = a * cs[j] - c * s
                            x2[j] = c * cs[j] + a * s
                        }
                    }
                }
            }
        }
    }
}
