// MOE_DIST_EXPERT_PRODUCTS: which kernel runs the experts' forward and input-gradient products, for
// comparing them through the real command line (scripts/test_variants.py runs both where the CPU has both).
import Foundation
import Kernels

extension Launch {
    /// `blas` forces OpenBLAS, `packed` requires the packed kernel (exit 2 where this CPU has none); unset or
    /// empty keeps the default (packed where the CPU runs it). The banner's "expert products:" line says which ran.
    /// Checks the value only: every ParallelContext starts from it (`ParallelContext.defaultExpertKernel`).
    static func checkExpertProducts(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        guard let value = environment["MOE_DIST_EXPERT_PRODUCTS"], !value.isEmpty else { return }
        switch value {
        case "blas":
            return
        case "packed":
            guard PackedMatmul.isAvailable else {
                throw UserError("MOE_DIST_EXPERT_PRODUCTS=packed: this CPU has no packed expert kernel (element-wise kernels: \(VectorKernels.level)); use blas or leave it unset")
            }
        default:
            throw UserError("MOE_DIST_EXPERT_PRODUCTS: expected blas or packed, got '\(value)'")
        }
    }
}
