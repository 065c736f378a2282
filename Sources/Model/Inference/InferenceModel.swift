// Single-rank inference for sampling, routing traces and export checks: the model of SPEC section 3 with
// every expert held here, run on new tokens against a key/value cache per recurrent iteration.
//
//   run(tokens at positions p0 ..< p0+n):
//     h = embed[x]
//     for r in 0 ..< R:
//         h += depth_embed[r]
//         q, k, v = RMSNorm(h)·wq, ·wk, ·wv;  rope(q, k) at p0 ..< p0+n;  cache[r] += (k, v)
//         h += softmax_causal(q·cache[r].kᵀ/sqrt(dh))·cache[r].v·wo     (keys 0 ..< p0+n)
//         h += FFN_p(RMSNorm(h))                                          (dropless unless asked)
//     logits = RMSNorm(h)·head
//
// The training model (RecurrentMoEModel) recomputes every position of a window; this one keeps each
// iteration's rotated keys and values, so a new token costs one row through every iteration. It is a
// second, independent implementation of the forward pass: the tests compare the two.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Kernels
import Configuration

public final class InferenceModel {
    public let config: RunConfig
    /// Every parameter, all experts (world size 1); fill with Checkpoint.loadParameters.
    public let store: ParameterStore
    public let cache: KVCache
    let params: ParameterTensors
    let rope: RopeTable
    private var bias: [Float]
    // Scratch for n new tokens; one meaning each.
    private let h = FloatBuffer()          // [n,d] residual stream
    private let normed = FloatBuffer()     // [n,d] RMSNorm output
    private let rstd = FloatBuffer()       // [n]
    private let q = FloatBuffer(), k = FloatBuffer(), v = FloatBuffer()   // [n,d]
    private let attn = FloatBuffer()       // [n,d] heads concatenated
    private let scores = FloatBuffer()     // [n, p0+n] one head's scores
    private let branch = FloatBuffer()     // [n,d] a branch's output before the residual add
    private let routerLogits = FloatBuffer(), routerScores = FloatBuffer(), routerProbs = FloatBuffer()  // [n,E]
    private let lse = FloatBuffer()        // [n]
    private let topIndex = Buffer<Int32>(), gates = FloatBuffer()   // [n,k]
    private let kept = Buffer<Int32>()     // [n,k] 1 = the assignment runs, 0 = dropped by capacity
    private let rowsIn = FloatBuffer(), rowsOut = FloatBuffer()      // [rows,d] one expert's gathered rows
    private let h1 = FloatBuffer(), h3 = FloatBuffer(), act = FloatBuffer()   // [rows,F]
    private let logitsBuffer = FloatBuffer()   // [rows,V]

    public init(config: RunConfig) {
        precondition(config.model.vocabSize > 0, "model.vocab_size must be resolved before building the model")
        self.config = config
        let experts = config.moe.isDense ? 0 ..< 0 : 0 ..< config.moe.numExperts
        store = ParameterStore(tensors: ModelTensors.list(config), localExperts: experts)
        params = ParameterTensors(store, store.params, config: config)
        rope = RopeTable(seqLen: config.model.seqLen, headDim: config.model.dModel / config.model.nHeads,
                         base: config.model.ropeBase)
        cache = KVCache(iterations: config.model.depth, capacity: config.model.seqLen, width: config.model.dModel)
        bias = [Float](repeating: 0, count: ModelBuffers.routerBiasPaths(config).count * max(config.moe.numExperts, 0))
    }

    /// The routers' selection biases [Q·E] (moe.router_bias_rate > 0; empty otherwise), zero until set.
    /// Sets the routers' selection biases ([Q·E], router order as ModelBuffers.routerBiasPaths).
    public func setSelectionBias(_ values: [Float]) {
        precondition(values.count == bias.count, "selection bias: \(values.count) values, expected \(bias.count)")
        bias = values
    }
    /// The selection biases in use ([Q·E]; empty when moe.router_bias_rate is 0).
    public var currentSelectionBias: [Float] { bias }

    private var d: Int { config.model.dModel }
    private var V: Int { config.model.vocabSize }
    private var R: Int { config.model.depth }
    /// Positions the model was trained on (model.seq_len): the cache holds at most this many tokens.
    public var contextLimit: Int { config.model.seqLen }

    /// Runs `tokens` at the positions after the cached ones, appends their keys and values to the cache and
    /// returns the logits [rows, V] of the last `logitRows` tokens (valid until the next call).
    /// `trace`: records every token's routing (experts, gates, entropy, drops). `capacityFactor` > 0 drops
    /// assignments beyond ceil(c·k·n/E) per expert in the order (slot, token) as training does for a
    /// micro-batch of these n tokens; 0 (sampling, evaluation) is dropless.
    public func run(_ tokens: [Int32], logitRows: Int = 1, trace: RoutingTrace? = nil,
                    capacityFactor: Double = 0) -> UnsafeBufferPointer<Float> {
        let n = tokens.count, p0 = cache.count
        precondition(n > 0 && p0 + n <= contextLimit, "inference: \(p0) cached + \(n) new tokens exceed model.seq_len \(contextLimit)")
        precondition(logitRows >= 0 && logitRows <= n)
        let hp = h.ensure(n * d)
        for (t, id) in tokens.enumerated() {
            precondition(id >= 0 && Int(id) < V, "token id \(id) outside the vocabulary (\(V))")
            (hp + t * d).update(from: params.embed + Int(id) * d, count: d)
        }
        trace?.begin(tokens: n, iterations: R, k: config.moe.topK)
        for r in 0 ..< R {
            if let de = params.depthEmbed.map({ $0 + r * d }) {
                for t in 0 ..< n { let row = hp + t * d; for j in 0 ..< d { row[j] += de[j] } }
            }
            attentionStep(r, n: n, p0: p0)
            ffnStep(r, n: n, trace: trace, capacityFactor: capacityFactor)
        }
        cache.count = p0 + n
        // Head on the last logitRows rows.
        let first = n - logitRows, x = normed.ensure(max(logitRows, 1) * d)
        rmsnormForward(x, rstd.ensure(max(logitRows, 1)), hp + first * d, params.finalNorm, logitRows, d,
                       eps: Float(config.model.normEps))
        let lg = logitsBuffer.ensure(max(logitRows, 1) * V)
        if let head = params.lmHead { product(lg, x, head, logitRows, d, V) } else if logitRows == 1 {
            lg.update(repeating: 0, count: V)
            Blas.gemv(trans: false, M: V, N: d, alpha: 1, A: params.embed, lda: d, x: x, beta: 0, y: lg)
        } else {
            matmulTransposedForward(lg, x, params.embed, logitRows, d, V)
        }
        return UnsafeBufferPointer(start: lg, count: logitRows * V)
    }

    /// h += Attn_i(RMSNorm(h)) for n new rows at positions p0 ..< p0+n, keys and values appended to cache[r].
    private func attentionStep(_ r: Int, n: Int, p0: Int) {
        let block = params.block(r), H = config.model.nHeads, dh = d / H, total = p0 + n
        let hp = h.pointer, a = normed.ensure(n * d)
        rmsnormForward(a, rstd.ensure(n), hp, block.attnNorm, n, d, eps: Float(config.model.normEps))
        let qp = q.ensure(n * d), kp = k.ensure(n * d), vp = v.ensure(n * d)
        product(qp, a, block.wq, n, d, d)
        product(kp, a, block.wk, n, d, d)
        product(vp, a, block.wv, n, d, d)
        rotate(qp, n: n, p0: p0, H: H)
        rotate(kp, n: n, p0: p0, H: H)
        let keys = cache.keys(r), values = cache.values(r)
        (keys + p0 * d).update(from: kp, count: n * d)
        (values + p0 * d).update(from: vp, count: n * d)
        let out = attn.ensure(n * d), s = scores.ensure(n * total)
        let scale = 1 / Float(dh).squareRoot()
        for head in 0 ..< H {
            let off = head * dh
            // s[n, total] = scale · q_h · K_hᵀ
            if n == 1 {
                s.update(repeating: 0, count: total)
                Blas.gemv(trans: false, M: total, N: dh, alpha: scale, A: keys + off, lda: d, x: qp + off, beta: 0, y: s)
            } else {
                Blas.gemm(transA: false, transB: true, M: n, N: total, K: dh, alpha: scale, A: qp + off, lda: d,
                          B: keys + off, ldb: d, beta: 0, C: s, ldc: total)
            }
            for i in 0 ..< n {
                let row = s + i * total, visible = p0 + i + 1    // causal: position p0+i sees s <= p0+i
                var m = -Float.infinity
                for j in 0 ..< visible { m = max(m, row[j]) }
                var sum: Float = 0
                for j in 0 ..< visible { row[j] = exp(row[j] - m); sum += row[j] }
                let inv = 1 / sum
                for j in 0 ..< visible { row[j] *= inv }
                for j in visible ..< total { row[j] = 0 }
            }
            // out_h[n, dh] = s · V_h
            if n == 1 {
                (out + off).update(repeating: 0, count: dh)
                Blas.gemv(trans: true, M: total, N: dh, alpha: 1, A: values + off, lda: d, x: s, beta: 0, y: out + off)
            } else {
                Blas.gemm(transA: false, transB: false, M: n, N: dh, K: total, alpha: 1, A: s, lda: total,
                          B: values + off, ldb: d, beta: 0, C: out + off, ldc: d)
            }
        }
        let o = branch.ensure(n * d)
        product(o, out, block.wo, n, d, d)
        for j in 0 ..< n * d { hp[j] += o[j] }
    }

    /// Rotary embedding of rows at positions p0 ..< p0+n ("rotate half", RopeTable's angles).
    private func rotate(_ x: UnsafeMutablePointer<Float>, n: Int, p0: Int, H: Int) {
        let dh = d / H, half = dh / 2
        rope.cos.withUnsafeBufferPointer { cs in
            rope.sin.withUnsafeBufferPointer { sn in
                for t in 0 ..< n {
                    let c = cs.baseAddress! + (p0 + t) * half, s = sn.baseAddress! + (p0 + t) * half
                    for head in 0 ..< H {
                        let x1 = x + t * d + head * dh, x2 = x1 + half
                        for j in 0 ..< half {
                            let a = x1[j], b = x2[j]
                            x1[j] = a * c[j] - b * s[j]
                            x2[j] = b * c[j] + a * s[j]
                        }
                    }
                }
            }
        }
    }

    /// h += FFN_p(RMSNorm(h; ffn_norm)): the dense FFN, or the routed experts' gated sum.
    private func ffnStep(_ r: Int, n: Int, trace: RoutingTrace?, capacityFactor: Double) {
        let block = params.block(r), pool = params.pool(r), c = config.moe, F = c.dFF
        let hp = h.pointer, u = normed.ensure(n * d), f = branch.ensure(n * d)
        rmsnormForward(u, rstd.ensure(n), hp, block.ffnNorm, n, d, eps: Float(config.model.normEps))
        if c.isDense {
            feedForward(f, u, pool.expert(0, d: d, F: F), rows: n)
        } else {
            route(r, u: u, n: n, trace: trace, capacityFactor: capacityFactor)
            runExperts(pool, u: u, out: f, n: n)
        }
        for j in 0 ..< n * d { hp[j] += f[j] }
    }

    /// Router of iteration r on u[n,d]: top-k experts and gates (SPEC section 3, every routing variant),
    /// then the capacity rule when asked; records the trace.
    private func route(_ r: Int, u: UnsafePointer<Float>, n: Int, trace: RoutingTrace?, capacityFactor: Double) {
        let c = config.moe, E = c.numExperts, K = c.topK
        let z = routerLogits.ensure(n * E), s = routerScores.ensure(n * E), p = routerProbs.ensure(n * E)
        let idx = topIndex.ensure(n * K), g = gates.ensure(n * K), keep = kept.ensure(n * K)
        product(z, u, params.router(r), n, d, E)
        let q = routerIndex(iteration: r)
        bias.withUnsafeBufferPointer { b in
            routerScoreForward(s, p, lse.ensure(n), idx, g, z, bias: b.isEmpty ? nil : b.baseAddress! + q * E, n, E, K,
                               score: c.routerScore == .sigmoid ? .sigmoid : .softmax, normalize: c.normalizeGates)
        }
        for i in 0 ..< n * K { keep[i] = 1 }
        if capacityFactor > 0 {
            let C = Int((capacityFactor * Double(K) * Double(n) / Double(E)).rounded(.up))
            var used = [Int](repeating: 0, count: E)
            for j in 0 ..< K {
                for t in 0 ..< n {
                    let e = Int(idx[t * K + j])
                    if used[e] < C { used[e] += 1 } else { keep[t * K + j] = 0 }
                }
            }
        }
        trace?.record(iteration: r, experts: idx, gates: g, kept: keep, probs: p, n: n, E: E)
    }

    /// The router iteration r uses, in ModelBuffers.routerBiasPaths order.
    func routerIndex(iteration r: Int) -> Int {
        config.moe.routers == .perIteration || config.moe.experts == .indexed ? r : 0
    }

    /// out[n,d] = Σ_j g_j · Expert_{e_j}(u) over the kept assignments, expert by expert.
    private func runExperts(_ pool: PoolTensors, u: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, n: Int) {
        let c = config.moe, E = c.numExperts, K = c.topK, F = c.dFF
        let idx = topIndex.pointer, g = gates.pointer, keep = kept.pointer
        out.update(repeating: 0, count: n * d)
        var rows: [(token: Int, gate: Float)] = []
        for e in 0 ..< E {
            rows.removeAll(keepingCapacity: true)
            for t in 0 ..< n {
                for j in 0 ..< K where Int(idx[t * K + j]) == e && keep[t * K + j] != 0 { rows.append((t, g[t * K + j])) }
            }
            guard !rows.isEmpty else { continue }
            let m = rows.count, x = rowsIn.ensure(m * d), y = rowsOut.ensure(m * d)
            for (i, row) in rows.enumerated() { (x + i * d).update(from: u + row.token * d, count: d) }
            feedForward(y, x, pool.expert(e, d: d, F: F), rows: m)
            for (i, row) in rows.enumerated() {
                let dst = out + row.token * d, src = y + i * d
                for j in 0 ..< d { dst[j] += row.gate * src[j] }
            }
        }
    }

    /// out[n,OC] = inp[n,C] · w[C,OC]; a single row goes through sgemv (sgemm would repack w on every call).
    private func product(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                         _ n: Int, _ C: Int, _ OC: Int) {
        guard n > 0 else { return }
        if n == 1 {
            out.update(repeating: 0, count: OC)
            Blas.gemv(trans: true, M: C, N: OC, alpha: 1, A: w, lda: OC, x: inp, beta: 0, y: out)
        } else {
            matmulForward(out, inp, w, n, C, OC)
        }
    }

    /// y[rows,d] = gelu(x·w1)·w2 or (silu(x·w1) ⊙ (x·w3))·w2 (SPEC section 3, the dense FFN / one expert).
    private func feedForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ w: FFNWeights, rows n: Int) {
        let F = config.moe.dFF
        let a = h1.ensure(n * F), g = act.ensure(n * F)
        product(a, x, w.w1, n, d, F)
        switch config.moe.activation {
        case .gelu:
            geluForward(g, a, n * F)
        case .swiglu:
            let b = h3.ensure(n * F)
            product(b, x, w.w3!, n, d, F)
            swigluForward(g, a, b, n * F)
        }
        product(y, g, w.w2, n, F, d)
    }
}

/// Rotated keys and values of the tokens seen so far, one [capacity, d] pair per recurrent iteration.
public final class KVCache {
    public let iterations: Int, capacity: Int, width: Int
    /// Tokens held (the next token's position).
    public internal(set) var count = 0
    private let storage: UnsafeMutablePointer<Float>

    init(iterations: Int, capacity: Int, width: Int) {
        self.iterations = iterations; self.capacity = capacity; self.width = width
        let n = max(2 * iterations * capacity * width, 1)
        storage = .allocate(capacity: n)
        storage.initialize(repeating: 0, count: n)
    }
    deinit { storage.deallocate() }

    /// Forgets every token (the next run starts at position 0).
    public func reset() { count = 0 }
    func keys(_ r: Int) -> UnsafeMutablePointer<Float> { storage + (2 * r) * capacity * width }
    func values(_ r: Int) -> UnsafeMutablePointer<Float> { storage + (2 * r + 1) * capacity * width }
    /// Bytes held.
    public var bytes: Int { 2 * iterations * capacity * width * 4 }
}
