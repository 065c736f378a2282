// Helpers for the kernel tests: dot products and sums in Double. (The seeded generator, finite differences
// and Float/Double conversion that the router tests in ModelTests share are in TestSupport/Numerics.swift.)

/// Σ a_i b_i in Double.
func dot(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    var s = 0.0
    for i in 0 ..< a.count { s += a[i] * b[i] }
    return s
}

/// Element-wise a + b.
func add(_ a: [Double], _ b: [Double]) -> [Double] { zip(a, b).map { $0 + $1 } }
