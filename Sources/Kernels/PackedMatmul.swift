// PackedMatmul: out = inp · W against a weight matrix packed once (CPackedGemm) and multiplied many times.
// The experts use it for their forward products and their input-gradient products: one expert's weights
// meet the rows routed to it once per recurrent iteration, and BLAS repacks them inside every call.
// AVX-512 only (elsewhere `isEnabled` is false and callers use Blas).
import CPackedGemm

public enum PackedMatmul {
    /// Whether products go through the packed kernel: on x86-64 CPUs with AVX-512 (the level the element-wise
    /// kernels run at). Tests switch it off to compare with the BLAS products.
    nonisolated(unsafe) public static var isEnabled = isAvailable
    /// Whether this machine can run it.
    public static let isAvailable = VectorKernels.level == .avx512

    /// What runs the experts' forward and input-gradient products, for banners and reports.
    public static var description: String { isEnabled ? "packed AVX-512 kernel" : "OpenBLAS" }

    /// Columns per panel of a packed matrix.
    public static let panel = Int(PGEMM_PANEL)

    /// Floats a packed [K, N] matrix takes (N rounded up to whole 64-column panels).
    @inline(__always)
    public static func packedFloats(K: Int, N: Int) -> Int { Int(pgemm_packed_floats(K, N)) }

    /// dst ← W[K, N] (row-major) packed.
    public static func pack(_ dst: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, K: Int, N: Int) {
        pgemm_pack(dst, w, K, N, N, 1)
    }

    /// dst ← Wᵀ[K, N] packed, for W stored row-major [N, K] (the input-gradient products' `· Wᵀ`).
    public static func packTransposed(_ dst: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, K: Int, N: Int) {
        pgemm_pack(dst, w, K, N, 1, K)
    }

    /// out[M, N] = inp[M, K] · packed (or out += with `accumulate`; otherwise out's prior contents, even NaN,
    /// are ignored). `workers` > 1 splits the 64-column panels over threads: every element is the same single
    /// sum whichever thread computes it, so the thread count never changes a bit.
    public static func multiply(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                                _ packed: UnsafePointer<Float>, M: Int, K: Int, N: Int, accumulate: Bool,
                                workers: Int = 1) {
        precondition(isAvailable, "PackedMatmul needs AVX-512")
        guard M > 0, N > 0 else { return }
        if K == 0 {   // empty inner dimension: the product is zero
            if !accumulate { out.update(repeating: 0, count: M * N) }
            return
        }
        let panels = (N + panel - 1) / panel
        let W = min(workers, panels, max(1, M * N * K >> 22))
        Blas.parallel(workers: W) { w in
            let r = Blas.share(w, of: W, items: panels)
            pgemm_multiply(M, N, K, inp, K, packed, out, N, accumulate ? 1 : 0, r.lowerBound, r.upperBound)
        }
    }
}
