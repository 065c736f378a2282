// Helpers for the kernel tests: a seeded generator, finite differences and Float/Double conversion.
// (Kept inside KernelsTests so they cannot collide with helpers other modules add to TestSupport.)

/// SplitMix64: a small, seeded, platform-independent generator for test inputs.
struct TestRNG {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Standard normal (Box–Muller).
    mutating func normal() -> Double {
        let u1 = max(uniform(), 1e-300), u2 = uniform()
        return (-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2)
    }

    /// n Floats drawn from normal(0, scale²).
    mutating func floats(_ n: Int, scale: Double = 1) -> [Float] {
        (0 ..< n).map { _ in Float(normal() * scale) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
@inline(__always) private func _log(_ x: Double) -> Double { log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { cos(x) }

/// Central differences ∂f/∂x_i ≈ (f(x + h e_i) − f(x − h e_i)) / 2h, evaluated in Double.
func finiteDifference(_ x: [Double], h: Double = 1e-6, _ f: ([Double]) -> Double) -> [Double] {
    var xp = x
    var g = [Double](repeating: 0, count: x.count)
    for i in 0 ..< x.count {
        xp[i] = x[i] + h
        let fp = f(xp)
        xp[i] = x[i] - h
        let fm = f(xp)
        xp[i] = x[i]
        g[i] = (fp - fm) / (2 * h)
    }
    return g
}

/// The Float values, widened exactly to Double (so references see the very inputs the kernels see).
func toDouble(_ a: [Float]) -> [Double] { a.map { Double($0) } }

/// Σ a_i b_i in Double.
func dot(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    var s = 0.0
    for i in 0 ..< a.count { s += a[i] * b[i] }
    return s
}

/// Element-wise a + b.
func add(_ a: [Double], _ b: [Double]) -> [Double] { zip(a, b).map { $0 + $1 } }
