// Learning rate (SPEC section 1): linear warm-up, then cosine decay to
// lr·min_lr_ratio at the end of the step budget. A pure function of the step.
import Foundation
import Configuration

public struct LearningRateSchedule: Sendable {
    public let peak: Double, minimum: Double, warmupSteps: Int, totalSteps: Int

    public init(_ t: TrainConfig, totalSteps: Int) {
        peak = t.lr; minimum = t.lr * t.minLrRatio; warmupSteps = t.warmupSteps; self.totalSteps = totalSteps
    }

    /// Learning rate of 0-based optimizer step `step`: lr·(step+1)/warmup during warm-up (so the first
    /// step already moves), then minimum + ½(1 + cos(π·progress))·(peak − minimum).
    public func callAsFunction(_ step: Int) -> Double {
        if step < warmupSteps { return peak * Double(step + 1) / Double(warmupSteps) }
        let span = max(totalSteps - warmupSteps, 1)
        let progress = min(Double(step - warmupSteps) / Double(span), 1)
        return minimum + 0.5 * (1 + cos(Double.pi * progress)) * (peak - minimum)
    }
}
