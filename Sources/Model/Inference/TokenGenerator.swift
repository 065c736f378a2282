// Autoregressive generation with the key/value cache, and what happens past model.seq_len.
//
// The model only ever sees positions 0 ..< seq_len (the ones it was trained on). A prompt longer than
// seq_len is cut to its last seq_len tokens. When the window is full and another token comes, the window
// slides: it keeps its newest seq_len/2 tokens (the new one included), the cache is rebuilt from them (one
// forward over seq_len/2 tokens) and generation goes on; the rotary positions restart at 0 with the window.
// `cached: false` recomputes the whole window for every token (the reference the cache is measured against).
public final class TokenGenerator {
    public let model: InferenceModel
    public init(model: InferenceModel) { self.model = model }

    /// Tokens kept when the window slides.
    public var slideKeep: Int { max(1, model.contextLimit / 2) }

    /// The window that `prompt` starts from (its last seq_len tokens).
    public func initialWindow(_ prompt: [Int32]) -> [Int32] { Array(prompt.suffix(model.contextLimit)) }

    /// Generates up to `maxNewTokens` tokens after `prompt` (non-empty), calling `emit` with each as it is
    /// chosen; `emit` returning false stops early. Returns the new tokens.
    @discardableResult
    public func generate(prompt: [Int32], maxNewTokens: Int, sampler: inout Sampler, cached: Bool = true,
                         emit: (Int32) -> Bool = { _ in true }) -> [Int32] {
        precondition(!prompt.isEmpty, "generate: the prompt has no tokens")
        var window = initialWindow(prompt)
        var out: [Int32] = []
        model.cache.reset()
        var logits = model.run(window)
        while out.count < maxNewTokens {
            let next = sampler.next(logits)
            out.append(next)
            if !emit(next) || out.count == maxNewTokens { break }
            if window.count == model.contextLimit {
                window = Array((window + [next]).suffix(slideKeep))
                model.cache.reset()
                logits = model.run(window)
            } else if cached {
                window.append(next)
                logits = model.run([next])
            } else {
                window.append(next)
                model.cache.reset()
                logits = model.run(window)
            }
        }
        return out
    }
}
