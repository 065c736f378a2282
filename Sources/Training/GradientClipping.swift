// Global-norm gradient clipping (SPEC section 4), as torch.nn.utils.clip_grad_norm_: the gradient is
// multiplied by max_norm / (‖g‖ + 1e-6) when ‖g‖ exceeds max_norm. ‖g‖ counts every trunk tensor once and
// every expert once, however many ranks hold copies of it (the Trainer adds the first copy's expert norm).

public enum GradientClipping {
    /// The factor the gradient is multiplied by; `maxNorm` 0 disables clipping.
    public static func scale(gradNorm: Double, maxNorm: Double) -> Float {
        maxNorm > 0 && gradNorm > maxNorm ? Float(maxNorm / (gradNorm + 1e-6)) : 1
    }
}
