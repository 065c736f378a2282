// Numeric helpers shared by the kernel and router tests: a seeded generator, central finite differences
// and exact Float -> Double widening.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SplitMix64: a small, seeded, platform-independent generator for test inputs.
public struct TestRNG {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Standard normal (Box–Muller).
    public mutating func normal() -> Double {
        let u1 = max(uniform(), 1e-300), u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// n Floats drawn from normal(0, scale²).
    public mutating func floats(_ n: Int, scale: Double = 1) -> [Float] {
        (0 ..< n).map { _ in Float(normal() * scale) }
    }
}

/// Central differences ∂f/∂x_i ≈ (f(x + h e_i) − f(x − h e_i)) / 2h, evaluated in Double.
public func finiteDifference(_ x: [Double], h: Double = 1e-6, _ f: ([Double]) -> Double) -> [Double] {
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
public func toDouble(_ a: [Float]) -> [Double] { a.map { Double($0) } }
