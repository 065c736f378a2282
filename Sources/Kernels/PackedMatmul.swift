// PackedMatmul: out = inp · W against a weight matrix packed once (CPackedGemm) and multiplied many times.
// The experts use it for their forward products and their input-gradient products: one expert's weights
// meet the rows routed to it once per recurrent iteration, and BLAS repacks them inside every call.
// x86-64 with AVX2 + FMA or AVX-512 (elsewhere `best` is nil and callers use Blas). Which kernel the experts
// run is the model's choice (ParallelContext.expertKernel), passed to every call.
import CPackedGemm

public enum PackedMatmul {
    /// A micro-kernel of CPackedGemm, each with its own pack layout (panel width).
    public enum Kernel: Int32, CaseIterable, Sendable, Comparable, CustomStringConvertible {
        case avx2 = 1       // PGEMM_AVX2: 6 x 16 tiles, 16-column panels
        case avx512 = 2     // PGEMM_AVX512: 6 x 64 tiles, 64-column panels

        public static func < (a: Kernel, b: Kernel) -> Bool { a.rawValue < b.rawValue }
        public var description: String { self == .avx2 ? "AVX2" : "AVX-512" }
    }

    /// The kernel for a vector level: AVX-512 from AVX-512, AVX2 from AVX2 + FMA, none below.
    public static func kernel(for level: VectorKernels.Level) -> Kernel? {
        switch level {
        case .avx512: .avx512
        case .avx2: .avx2
        case .baseline: nil
        }
    }

    /// The fastest kernel this machine runs (the level the element-wise kernels run at); nil: BLAS only.
    public static let best = kernel(for: VectorKernels.level)
    /// Every kernel this machine runs (for tests comparing them).
    public static var runnableKernels: [Kernel] { Kernel.allCases.filter { best != nil && $0 <= best! } }
    /// Whether this machine can run any.
    public static var isAvailable: Bool { best != nil }

    /// Columns per panel of a matrix packed for `kernel`.
    public static func panel(_ kernel: Kernel) -> Int { Int(pgemm_panel(kernel.rawValue)) }

    /// Floats a [K, N] matrix packed for `kernel` takes (N rounded up to whole panels).
    @inline(__always)
    public static func packedFloats(K: Int, N: Int, kernel: Kernel) -> Int {
        Int(pgemm_packed_floats(kernel.rawValue, K, N))
    }

    /// dst ← W[K, N] (row-major) packed for `kernel`.
    public static func pack(_ dst: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, K: Int, N: Int,
                            kernel: Kernel) {
        pgemm_pack(kernel.rawValue, dst, w, K, N, N, 1)
    }

    /// dst ← Wᵀ[K, N] packed for `kernel`, for W stored row-major [N, K] (the input-gradient products' `· Wᵀ`).
    public static func packTransposed(_ dst: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, K: Int, N: Int,
                                      kernel: Kernel) {
        pgemm_pack(kernel.rawValue, dst, w, K, N, 1, K)
    }

    /// out[M, N] = inp[M, K] · packed (out's prior contents, even NaN, are ignored), `packed` made for
    /// `kernel`. `workers` > 1 splits the panels over threads: every element is the same single sum whichever
    /// thread (or kernel) computes it, so the thread count never changes a bit.
    public static func multiply(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                                _ packed: UnsafePointer<Float>, M: Int, K: Int, N: Int, kernel: Kernel, workers: Int = 1) {
        product(out, inp, packed, M: M, K: K, N: N, accumulate: false, kernel: kernel, workers: workers)
    }

    /// out[M, N] += inp[M, K] · packed: `multiply` adding into out (a backward's input gradient).
    public static func multiplyAdding(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                                      _ packed: UnsafePointer<Float>, M: Int, K: Int, N: Int, kernel: Kernel,
                                      workers: Int = 1) {
        product(out, inp, packed, M: M, K: K, N: N, accumulate: true, kernel: kernel, workers: workers)
    }

    private static func product(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                                _ packed: UnsafePointer<Float>, M: Int, K: Int, N: Int, accumulate: Bool,
                                kernel: Kernel, workers: Int) {
        precondition(best != nil && kernel <= best!, "PackedMatmul's \(kernel) kernel does not run on this CPU")
        guard M > 0, N > 0 else { return }
        if K == 0 {   // empty inner dimension: the product is zero
            if !accumulate { out.update(repeating: 0, count: M * N) }
            return
        }
        let width = panel(kernel), panels = (N + width - 1) / width
        let W = min(workers, panels, max(1, M * N * K >> 22))
        Blas.parallel(workers: W) { w in
            let r = Blas.share(w, of: W, items: panels)
            pgemm_multiply(kernel.rawValue, M, N, K, inp, K, packed, out, N, accumulate ? 1 : 0,
                           r.lowerBound, r.upperBound)
        }
    }
}
