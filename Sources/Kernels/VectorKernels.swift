// VectorKernels: the level at which the C element-wise kernels (CVectorKernels: activations, AdamW, softmax
// exponentials and maxima, sums of squares) run. Swift code is compiled for the baseline x86-64 ISA; the C kernels are built for AVX2 and
// AVX-512 too, and this picks the highest level both the CPU (CPUID, see CPUFeatures) and the build have.
// Every level gives the same bits (NaNs aside: their sign may differ), so the choice changes speed only.
import CVectorKernels

public enum VectorKernels {
    /// A build of the kernels.
    public enum Level: Int32, CaseIterable, Sendable, Comparable, CustomStringConvertible {
        case baseline = 0   // SSE2
        case avx2 = 1       // AVX2 + FMA
        case avx512 = 2     // AVX-512 F/BW/DQ/VL

        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
        public var description: String {
            switch self { case .baseline: "baseline"; case .avx2: "AVX2"; case .avx512: "AVX-512" }
        }
    }

    /// The highest level the library was built with on this architecture.
    public static let builtLevel = Level(rawValue: cvk_max_level()) ?? .baseline

    /// The level for a CPU with these features (no higher than the build).
    public static func level(for features: CPUFeatures) -> Level {
        let cpu: Level = switch features.level {
        case .avx512, .avx512bf16: .avx512
        case .avx2: .avx2
        case .avx, .baseline: .baseline
        }
        return min(cpu, builtLevel)
    }

    /// The level the kernels run at on this machine.
    public static let level: Level = level(for: .current)

    /// The levels this machine can run (for tests comparing them).
    public static var runnableLevels: [Level] { Level.allCases.filter { $0 <= level } }
}
