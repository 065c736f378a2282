// The model's one table of tensors (ModelTensors.list) against SPEC section 2's listing, written out by hand:
// the paths and their order are what checkpoints and exports hold, so they must never move. And what is
// derived from the table: the store's views, the initialisation kinds and the cost model's products.
import XCTest
import Configuration
import TestSupport
@testable import Model

final class ParameterTableTests: XCTestCase {
    func testPathsShapesAndOrderAreSPECs() {
        // tiny: d 32, V 256, R 2, E 8, F 32; shared trunk and experts, tied embeddings, depth embedding, gelu.
        var c = tinyConfig()
        let d = c.model.dModel, V = c.model.vocabSize, R = c.model.depth, E = c.moe.numExperts, F = c.moe.dFF
        func table() -> [String] { ModelTensors.list(c).map { "\($0.path) \($0.shape)\($0.isExpert ? " expert" : "")" } }
        XCTAssertEqual(table(), [
            "embed [\(V), \(d)]", "depth_embed [\(R), \(d)]",
            "blocks/0/attn_norm [\(d)]", "blocks/0/wq [\(d), \(d)]", "blocks/0/wk [\(d), \(d)]", "blocks/0/wv [\(d), \(d)]",
            "blocks/0/wo [\(d), \(d)]", "blocks/0/ffn_norm [\(d)]",
            "ffn/0/router [\(d), \(E)]", "ffn/0/w1 [\(E), \(d), \(F)] expert", "ffn/0/w2 [\(E), \(F), \(d)] expert",
            "final_norm [\(d)]",
        ])
        // indexed trunk and experts, swiglu, untied head, no depth embedding
        c.model.trunk = .indexed; c.moe.experts = .indexed; c.moe.activation = .swiglu
        c.model.tieEmbeddings = false; c.model.depthEmbedding = false
        let paths = ModelTensors.list(c).map(\.path)
        XCTAssertEqual(paths, ["embed"]
            + (0 ..< R).flatMap { i in ["attn_norm", "wq", "wk", "wv", "wo", "ffn_norm"].map { "blocks/\(i)/\($0)" } }
            + (0 ..< R).flatMap { p in ["router", "w1", "w3", "w2"].map { "ffn/\(p)/\($0)" } }
            + ["final_norm", "lm_head"])
        // per-iteration routers over the shared pool, instead of ffn/0/router
        c = tinyConfig { $0.moe.routers = .perIteration }
        XCTAssertEqual(ModelTensors.list(c).map(\.path).filter { $0.hasPrefix("ffn/") },
                       (0 ..< R).map { "ffn/0/router/\($0)" } + ["ffn/0/w1", "ffn/0/w2"])
        // the routers' selection biases (SPEC section 6, /buffers/), from the same table
        c.moe.routerBiasRate = 0.001
        XCTAssertEqual(ModelBuffers.routerBiasPaths(c), (0 ..< R).map { "ffn/0/router_bias/\($0)" })
        c.moe.routers = .perPool; c.moe.experts = .indexed
        XCTAssertEqual(ModelBuffers.routerBiasPaths(c), (0 ..< R).map { "ffn/\($0)/router_bias" })
        c.moe.experts = .shared
        XCTAssertEqual(ModelBuffers.routerBiasPaths(c), ["ffn/0/router_bias"])
        c.moe.routerBiasRate = 0
        XCTAssertEqual(ModelBuffers.routerBiasPaths(c), [])
        // dense FFN
        c = tinyConfig { $0.moe.numExperts = 0; $0.moe.activation = .swiglu }
        XCTAssertEqual(ModelTensors.list(c).filter { $0.path.hasPrefix("ffn/") }.map { "\($0.path) \($0.shape)" },
                       ["ffn/0/w1 [\(d), \(F)]", "ffn/0/w3 [\(d), \(F)]", "ffn/0/w2 [\(F), \(d)]"])
    }

    /// SPEC section 2's initialisation, read back from a store: norms 1, depth embeddings 0, the rest
    /// normal(0, 0.02) with wo and w2 scaled by 1/sqrt(2R) (checked by the sample standard deviation).
    func testInitialisationByKind() {
        let c = tinyConfig { $0.moe.routers = .perIteration; $0.moe.dFF = 64 }
        let store = ParameterStore(tensors: ModelTensors.list(c), localExperts: 0 ..< c.moe.numExperts)
        store.initialize(seed: 3, depth: c.model.depth)
        let scaled = 0.02 / (2 * Double(c.model.depth)).squareRoot()
        for p in store.infos {
            let v = Array(UnsafeBufferPointer(start: store.params + p.offset, count: p.count)).map(Double.init)
            let name = p.path.split(separator: "/").map(String.init)
            if ["attn_norm", "ffn_norm", "final_norm"].contains(name.last!) {
                XCTAssertEqual(Set(v), [1], p.path)
            } else if p.path == "depth_embed" {
                XCTAssertEqual(Set(v), [0], p.path)
            } else {
                let sd = (v.reduce(0) { $0 + $1 * $1 } / Double(v.count)).squareRoot()
                let expected = ["wo", "w2"].contains(name.last!) ? scaled : 0.02
                // ≥ 256 samples (a router [32, 8]): the sample standard deviation is within 15% of sigma
                // (its own spread is sigma/sqrt(2n) <= 4.4%).
                XCTAssertEqual(sd, expected, accuracy: 0.15 * expected, p.path)
            }
        }
    }

    /// The per-token products of ModelCost against the formula in its documentation, written out:
    /// R·(4d² + d·E + k·mats·d·F) + d·V for shared pools; a per-iteration router counts once per iteration.
    func testMatmulParametersPerTokenFormula() {
        for routers in [RouterPlacement.perPool, .perIteration] {
            let c = tinyConfig { $0.moe.routers = routers }
            let d = c.model.dModel, V = c.model.vocabSize, R = c.model.depth, E = c.moe.numExperts
            let k = c.moe.topK, F = c.moe.dFF
            XCTAssertEqual(ModelCost.matmulParametersPerToken(c), R * (4 * d * d + d * E + k * 2 * d * F) + d * V, "\(routers)")
        }
    }
}
