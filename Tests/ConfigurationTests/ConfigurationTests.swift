// Configuration: defaults match SPEC section 1, YAML + overrides load, every error names
// its key in one line, JSON/YAML round trips, presets load and validate.
import Configuration
import Foundation
import TestSupport
import XCTest

/// Asserts that `body` throws a ConfigError whose one-line description contains every fragment.
func assertConfigError(_ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                       _ body: () throws -> Void) {
    do {
        try body()
        XCTFail("expected a ConfigError containing \(fragments)", file: file, line: line)
    } catch let e as ConfigError {
        let d = e.description
        XCTAssertFalse(d.contains("\n"), "not one line: \(d)", file: file, line: line)
        for f in fragments { XCTAssertTrue(d.contains(f), "\"\(d)\" lacks \"\(f)\"", file: file, line: line) }
    } catch {
        XCTFail("expected a ConfigError, got \(error)", file: file, line: line)
    }
}

/// A valid config built from defaults plus a step budget.
func validBase() -> RunConfig {
    var c = RunConfig(); c.train.maxSteps = 100; return c
}

final class DefaultsTests: XCTestCase {
    /// SPEC section 1, row by row.
    func testDefaultsEqualSpecTable() throws {
        let c = RunConfig()
        let expected: [String: ConfigValue] = [
            "name": .string("recurrent_shared_moe_40e_top2_ff2048_wikitext103"),
            "model.vocab_size": .int(0), "model.d_model": .int(512), "model.n_heads": .int(8),
            "model.seq_len": .int(256), "model.depth": .int(6), "model.trunk": .string("shared"),
            "model.depth_embedding": .bool(true), "model.tie_embeddings": .bool(true),
            "model.rope_base": .double(10000), "model.norm_eps": .double(1e-5),
            "moe.num_experts": .int(40), "moe.top_k": .int(2), "moe.d_ff": .int(2048),
            "moe.experts": .string("shared"), "moe.activation": .string("gelu"),
            "moe.normalize_gates": .bool(true), "moe.capacity_factor": .double(0),
            "moe.aux_loss_coef": .double(0.01), "moe.z_loss_coef": .double(0),
            "moe.router_score": .string("softmax"), "moe.router_bias_rate": .double(0),
            "moe.aux_scope": .string("micro_batch"), "moe.routers": .string("per_pool"),
            "train.global_batch": .int(32), "train.micro_batch": .int(8), "train.lr": .double(3e-4),
            "train.min_lr_ratio": .double(0.1), "train.warmup_steps": .int(200),
            "train.weight_decay": .double(0.1), "train.beta1": .double(0.9), "train.beta2": .double(0.95),
            "train.eps": .double(1e-8), "train.grad_clip": .double(1.0), "train.seed": .int(1234),
            "train.data_seed": .null,   // not in SPEC: the data order's seed, null = train.seed (replicates)
            "train.max_steps": .null, "train.max_tokens": .null,
            "train.eval_interval": .int(500), "train.eval_tokens": .int(13299), "train.log_interval": .int(10),
            "train.checkpoint_interval": .int(500), "train.keep_checkpoints": .int(3),
            "data.train": .null, "data.valid": .null, "data.tokenizer": .null,
            "parallel.expert_parallel": .null,
            "parallel.balance_experts": .bool(true),   // not in SPEC: expert lending (changes no result)
            "parallel.collective_timeout": .double(600),   // not in SPEC: the hung-rank watchdog (changes no result)
            // gate.*: stage gates (not in SPEC section 1; defaults from the research notes, see GateConfig)
            "gate.enabled": .bool(true), "gate.min_improvement": .double(0.02), "gate.patience": .int(3),
            "gate.slope_window": .int(1000), "gate.flat_slope": .double(0.04), "gate.routing_tolerance": .double(0.05),
            "gate.promote_margin": .double(0.05), "gate.equal_tolerance": .double(0.01),
            "gate.entropy_margin": .double(0.02), "gate.max_load_margin": .double(0.1),
            "gate.throughput_margin": .double(0.1), "gate.noise_sigmas": .double(2),
        ]
        XCTAssertEqual(Set(RunConfig.keys.map(\.name)), Set(expected.keys), "the key table is SPEC section 1 plus gate.*")
        for (k, v) in expected { XCTAssertEqual(c.value(forKey: k), v, k) }
        XCTAssertNil(c.value(forKey: "model.nope"))
    }

    func testDefaultsNeedOnlyABudget() throws {
        assertConfigError(["train.max_steps", "must be set"]) { try validate(RunConfig(), worldSize: 1) }
        XCTAssertNoThrow(try validate(validBase(), worldSize: 1))
        XCTAssertNoThrow(try validate(validBase(), worldSize: 4))
    }
}

/// The micro-batch rule shared by train, bench and estimate (BatchFit.swift), against a brute-force
/// search over every micro-batch 1 ... micro_batch.
final class BatchFitTests: XCTestCase {
    func testLargestMicroBatchThatDividesAgreesWithBruteForce() throws {
        for G in 1 ... 40 { for b in 1 ... 12 { for W in 1 ... 9 {
            var c = validBase(); c.train.globalBatch = G; c.train.microBatch = b
            let expected = (1 ... b).filter { G % ($0 * W) == 0 }.max()
            if let e = expected {
                let fit = try c.batchFit(worldSize: W)
                XCTAssertEqual(fit.microBatch, e, "G \(G) b \(b) W \(W)")
                XCTAssertEqual(fit.microSteps * e * W, G)
                XCTAssertEqual(fit.note == nil, e == b)
                try c.fitMicroBatch(worldSize: W)
                XCTAssertNoThrow(try validate(c, worldSize: W))
            } else {
                // No micro-batch fits: the error names train.global_batch and an override that works.
                var override = ""
                assertConfigError(["train.global_batch", "cannot be split over \(W) ranks"]) {
                    do { _ = try c.batchFit(worldSize: W) } catch let e as ConfigError {
                        override = String(e.description.split(separator: " ").first { $0.hasPrefix("train.global_batch=") } ?? "")
                        throw e
                    }
                }
                try ConfigLoader.apply(overrides: [override], to: &c)
                XCTAssertNoThrow(try c.fitMicroBatch(worldSize: W), override)
                XCTAssertNoThrow(try validate(c, worldSize: W))
            }
        } } }
    }

    func testTheNoteIsOneLineNamingTheChosenValue() throws {
        var c = validBase()      // global 32, micro 8
        let note = try XCTUnwrap(try c.fitMicroBatch(worldSize: 8))
        XCTAssertEqual(c.train.microBatch, 4)
        XCTAssertFalse(note.contains("\n"))
        XCTAssertTrue(note.contains("train.micro_batch=4"), note)
    }
}

final class YAMLLoaderTests: XCTestCase {
    func testSectionsAndOverrides() throws {
        let yaml = """
        name: probe
        model:
          d_model: 64
          n_heads: 4
        moe:
          aux_loss_coef: 0.005
          experts: indexed
        train:
          lr: 3e-4
          max_tokens: 1e6
          max_steps: 1_000
        data:
          train: a/train.tok
        """
        let c = try ConfigLoader.load(yamlText: yaml, overrides: ["moe.aux_loss_coef=0.02", "model.d_model=128",
                                                                   "data.train=null", "name=probe_2", "moe.top_k=1"])
        XCTAssertEqual(c.name, "probe_2")
        XCTAssertEqual(c.model.dModel, 128, "override wins over the file")
        XCTAssertEqual(c.model.nHeads, 4, "file value kept")
        XCTAssertEqual(c.moe.auxLossCoef, 0.02)
        XCTAssertEqual(c.moe.experts, .indexed)
        XCTAssertEqual(c.moe.topK, 1)
        XCTAssertEqual(c.train.lr, 3e-4)
        XCTAssertEqual(c.train.maxTokens, 1_000_000)
        XCTAssertEqual(c.train.maxSteps, 1000)
        XCTAssertNil(c.data.train, "null unsets an optional key")
        XCTAssertEqual(c.model.seqLen, 256, "untouched keys keep their defaults")
    }

    func testFileOnDiskAndLaterOverrideWins() throws {
        let path = NSTemporaryDirectory() + "cfg-\(UUID().uuidString).yaml"
        try "moe:\n  top_k: 1\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let c = try ConfigLoader.load(yamlPath: path, overrides: ["moe.top_k=3", "moe.top_k=4"])
        XCTAssertEqual(c.moe.topK, 4)
        XCTAssertEqual(try ConfigLoader.load(yamlPath: nil, overrides: []), RunConfig())
        assertConfigError(["/nonexistent.yaml", "cannot read"]) { _ = try ConfigLoader.load(yamlPath: "/nonexistent.yaml", overrides: []) }
    }

    func testTopLevelDottedKeys() throws {
        let c = try ConfigLoader.load(yamlText: "moe.top_k: 1\ntrain.max_steps: 50\n")
        XCTAssertEqual(c.moe.topK, 1)
        XCTAssertEqual(c.train.maxSteps, 50)
    }

    func testEmptyAndNullSectionsKeepDefaults() throws {
        XCTAssertEqual(try ConfigLoader.load(yamlText: ""), RunConfig())
        XCTAssertEqual(try ConfigLoader.load(yamlText: "model:\nmoe: null\n"), RunConfig())
    }

    func testUnknownKeysSuggestTheClosest() {
        assertConfigError(["f.yaml:2", "model.d_modle", "unknown key", "did you mean model.d_model?"]) {
            _ = try ConfigLoader.load(yamlText: "model:\n  d_modle: 3\n", origin: "f.yaml")
        }
        assertConfigError(["model.top_k", "did you mean moe.top_k?"]) {
            _ = try ConfigLoader.load(yamlText: "model:\n  top_k: 3\n")
        }
        assertConfigError(["models", "did you mean model?"]) { _ = try ConfigLoader.load(yamlText: "models:\n  d_model: 3\n") }
        assertConfigError(["override 'moe.aux_loss=0.1'", "moe.aux_loss", "did you mean moe.aux_loss_coef?"]) {
            _ = try ConfigLoader.load(yamlPath: nil, overrides: ["moe.aux_loss=0.1"])
        }
        assertConfigError(["train.globalbatch", "did you mean train.global_batch?"]) {
            _ = try ConfigLoader.load(yamlPath: nil, overrides: ["train.globalbatch=4"])
        }
    }

    func testWrongTypesNameTheKey() {
        let cases: [(String, [String])] = [
            ("model:\n  d_model: big\n", ["f.yaml:2", "model.d_model", "must be an integer, got big"]),
            ("model:\n  d_model: 51.5\n", ["model.d_model", "must be an integer, got 51.5"]),
            ("model:\n  d_model: \"512\"\n", ["model.d_model", "must be an integer, got string \"512\""]),
            ("model:\n  d_model: null\n", ["model.d_model", "not optional"]),
            ("model:\n  d_model: [1, 2]\n", ["model.d_model", "must be an integer, got a list"]),
            ("model:\n  tie_embeddings: maybe\n", ["model.tie_embeddings", "must be true or false"]),
            ("model:\n  trunk: looped\n", ["model.trunk", "must be one of shared, indexed, got looped"]),
            ("moe:\n  activation: relu\n", ["moe.activation", "one of gelu, swiglu"]),
            ("train:\n  lr: fast\n", ["train.lr", "must be a number, got fast"]),
            ("train:\n  lr: .inf\n", ["train.lr", "finite"]),
            ("model: 3\n", ["f.yaml:1", "model", "must be a mapping of model.* keys"]),
            ("- 1\n- 2\n", ["top level must be a mapping"]),
            ("model:\n  d_model: 1\n  d_model: 2\n", ["d_model", "given twice"]),
            ("model: {d_model: 1\n", ["f.yaml:", "invalid YAML"]),
        ]
        for (yaml, fragments) in cases {
            assertConfigError(fragments) { _ = try ConfigLoader.load(yamlText: yaml, origin: "f.yaml") }
        }
    }

    func testMalformedOverrides() {
        assertConfigError(["override 'moe.top_k'", "expected key=value"]) { _ = try ConfigLoader.load(yamlPath: nil, overrides: ["moe.top_k"]) }
        assertConfigError(["override '--moe.top_k=1'", "without leading dashes"]) { _ = try ConfigLoader.load(yamlPath: nil, overrides: ["--moe.top_k=1"]) }
        assertConfigError(["override '=1'", "missing key"]) { _ = try ConfigLoader.load(yamlPath: nil, overrides: ["=1"]) }
        assertConfigError(["moe.top_k", "missing value"]) { _ = try ConfigLoader.load(yamlPath: nil, overrides: ["moe.top_k="]) }
        assertConfigError(["moe.top_k", "must be an integer, got a mapping"]) { _ = try ConfigLoader.load(yamlPath: nil, overrides: ["moe.top_k=a: b"]) }
        assertConfigError(["moe.top_k", "must be an integer, got two"]) { _ = try ConfigLoader.load(yamlPath: nil, overrides: ["moe.top_k=two"]) }
        assertConfigError(["moe", "is a section", "moe.num_experts="]) { _ = try ConfigLoader.load(yamlPath: nil, overrides: ["moe=3"]) }
        assertConfigError(["moe.top_k", "not optional"]) { _ = try ConfigLoader.load(yamlPath: nil, overrides: ["moe.top_k=null"]) }
    }
}

final class ValidationTests: XCTestCase {
    /// Each impossible value gives an error naming its key and rule.
    func testEveryRuleNamesItsKey() {
        typealias Case = (String, (inout RunConfig) -> Void, [String])
        let cases: [Case] = [
            ("d_model % n_heads", { $0.model.nHeads = 7 }, ["model.n_heads", "must divide model.d_model (512), got 7"]),
            ("odd head width", { $0.model.dModel = 24; $0.model.nHeads = 8 }, ["model.n_heads", "must be even", "= 3"]),
            ("d_model", { $0.model.dModel = 0 }, ["model.d_model", "must be >= 1, got 0"]),
            ("n_heads", { $0.model.nHeads = 0 }, ["model.n_heads", "must be >= 1"]),
            ("seq_len", { $0.model.seqLen = 0 }, ["model.seq_len", "must be >= 1"]),
            ("depth", { $0.model.depth = 0 }, ["model.depth", "must be >= 1"]),
            ("vocab", { $0.model.vocabSize = -1 }, ["model.vocab_size", "must be >= 0"]),
            ("rope", { $0.model.ropeBase = 0 }, ["model.rope_base", "must be > 0"]),
            ("norm eps", { $0.model.normEps = -1 }, ["model.norm_eps", "must be > 0"]),
            ("experts", { $0.moe.numExperts = -2 }, ["moe.num_experts", "must be >= 0"]),
            ("top_k big", { $0.moe.topK = 41 }, ["moe.top_k", "must be <= moe.num_experts (40), got 41"]),
            ("top_k 0", { $0.moe.topK = 0 }, ["moe.top_k", "must be >= 1, got 0"]),
            ("d_ff", { $0.moe.dFF = 0 }, ["moe.d_ff", "must be >= 1"]),
            ("capacity", { $0.moe.capacityFactor = -0.5 }, ["moe.capacity_factor", "must be >= 0, got -0.5"]),
            ("aux", { $0.moe.auxLossCoef = -0.01 }, ["moe.aux_loss_coef", "must be >= 0"]),
            ("z", { $0.moe.zLossCoef = -1 }, ["moe.z_loss_coef", "must be >= 0"]),
            ("global", { $0.train.globalBatch = 0 }, ["train.global_batch", "must be >= 1"]),
            ("micro", { $0.train.microBatch = 0 }, ["train.micro_batch", "must be >= 1"]),
            ("divisible", { $0.train.globalBatch = 20 }, ["train.global_batch", "multiple of train.micro_batch × world size (8 × 2 = 16), got 20", "train.micro_batch=5"]),
            ("lr", { $0.train.lr = 0 }, ["train.lr", "must be > 0, got 0.0"]),
            ("lr nan", { $0.train.lr = .nan }, ["train.lr", "must be > 0"]),
            ("min_lr_ratio", { $0.train.minLrRatio = 1.5 }, ["train.min_lr_ratio", "must be in [0, 1], got 1.5"]),
            ("warmup", { $0.train.warmupSteps = -1 }, ["train.warmup_steps", "must be >= 0"]),
            ("wd", { $0.train.weightDecay = -0.1 }, ["train.weight_decay", "must be >= 0"]),
            ("beta1", { $0.train.beta1 = 1 }, ["train.beta1", "must be in [0, 1), got 1.0"]),
            ("beta2", { $0.train.beta2 = -0.1 }, ["train.beta2", "must be in [0, 1)"]),
            ("eps", { $0.train.eps = 0 }, ["train.eps", "must be > 0"]),
            ("clip", { $0.train.gradClip = -1 }, ["train.grad_clip", "must be >= 0"]),
            ("budget", { $0.train.maxSteps = nil }, ["train.max_steps", "one of train.max_steps and train.max_tokens must be set"]),
            ("max_steps", { $0.train.maxSteps = 0 }, ["train.max_steps", "must be >= 1"]),
            ("max_tokens", { $0.train.maxTokens = 0 }, ["train.max_tokens", "must be >= 1"]),
            ("eval_interval", { $0.train.evalInterval = 0 }, ["train.eval_interval", "must be >= 1"]),
            ("eval_tokens", { $0.train.evalTokens = 1 }, ["train.eval_tokens", "must be >= 2"]),
            ("log_interval", { $0.train.logInterval = 0 }, ["train.log_interval", "must be >= 1"]),
            ("ckpt_interval", { $0.train.checkpointInterval = 0 }, ["train.checkpoint_interval", "must be >= 1"]),
            ("keep", { $0.train.keepCheckpoints = 0 }, ["train.keep_checkpoints", "must be >= 1"]),
            ("data path", { $0.data.valid = "" }, ["data.valid", "empty"]),
            ("name", { $0.name = "a/b" }, ["name", "without '/'"]),
            ("ep divides", { $0.parallel.expertParallel = 3 }, ["parallel.expert_parallel", "must divide the world size (2), got 3"]),
            ("ep positive", { $0.parallel.expertParallel = 0 }, ["parallel.expert_parallel", "must be >= 1"]),
        ]
        for (label, mutate, fragments) in cases {
            var c = validBase()
            mutate(&c)
            let errors = validationErrors(c, worldSize: 2)
            XCTAssertEqual(errors.count, 1, "\(label): \(errors)")
            assertConfigError(fragments) { try validate(c, worldSize: 2) }
        }
    }

    func testExpertParallelAgainstExperts() {
        var c = validBase()
        c.moe.numExperts = 4; c.moe.topK = 2; c.train.globalBatch = 64
        assertConfigError(["parallel.expert_parallel", "defaults to the world size (8)", "<= moe.num_experts (4)"]) {
            try validate(c, worldSize: 8)
        }
        c.parallel.expertParallel = 8
        assertConfigError(["parallel.expert_parallel", "must be <= moe.num_experts (4), got 8"]) { try validate(c, worldSize: 8) }
        c.parallel.expertParallel = 4
        XCTAssertNoThrow(try validate(c, worldSize: 8))
        XCTAssertEqual(c.expertParallel(worldSize: 8), 4)
        // Dense runs: top_k and the expert count do not constrain anything.
        var d = validBase(); d.moe.numExperts = 0; d.moe.topK = 5; d.train.globalBatch = 64
        XCTAssertNoThrow(try validate(d, worldSize: 8))
    }

    func testErrorMessageFormat() {
        var c = validBase(); c.moe.topK = 41
        XCTAssertEqual(validationErrors(c, worldSize: 1).first?.description, "moe.top_k: must be <= moe.num_experts (40), got 41")
        XCTAssertEqual(validationErrors(c, worldSize: 0).first?.description, "world size must be >= 1, got 0")
    }
}

final class SerializationTests: XCTestCase {
    func sample() -> RunConfig {
        var c = validBase()
        c.name = "probe \"quoted\" run"
        c.model.vocabSize = 8192; c.model.trunk = .indexed; c.model.normEps = 1e-6
        c.moe.activation = .swiglu; c.moe.capacityFactor = 1.25; c.moe.auxLossCoef = 0.005
        c.train.lr = 3e-4; c.train.maxTokens = 123_456_789; c.train.eps = 1e-8
        c.data.train = "data/x train.tok"; c.data.tokenizer = "null"
        c.parallel.expertParallel = 2
        return c
    }

    func testJSONRoundTrip() throws {
        for c in [RunConfig(), sample()] {
            XCTAssertEqual(try RunConfig.fromJSON(c.toJSON()), c)
            XCTAssertEqual(try RunConfig.fromJSON(c.toJSON(pretty: true)), c)
        }
    }

    func testJSONLayoutIsSortedAndParsesAsJSON() throws {
        let json = sample().toJSON()
        XCTAssertFalse(json.contains("\n"))
        XCTAssertTrue(json.hasPrefix("{\"data\": {\"tokenizer\": \"null\", \"train\": \"data/x train.tok\", \"valid\": null}, \"gate\": {\"enabled\": true,"), json)
        XCTAssertTrue(json.contains("}, \"model\": {\"d_model\": 512,"), json)
        let obj = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
        XCTAssertEqual(obj.keys.sorted(), ["data", "gate", "model", "moe", "name", "parallel", "train"])
        let moe = obj["moe"] as! [String: Any]
        XCTAssertEqual(moe["aux_loss_coef"] as? Double, 0.005)
        XCTAssertEqual((obj["train"] as! [String: Any])["max_tokens"] as? Int, 123_456_789)
        XCTAssertTrue(json.contains("\"eps\": 1.0e-08"), json)
    }

    func testYAMLRoundTrip() throws {
        for c in [RunConfig(), sample()] {
            let yaml = c.toYAML()
            XCTAssertEqual(try ConfigLoader.load(yamlText: yaml), c, yaml)
        }
        XCTAssertTrue(RunConfig().toYAML().contains("\n  d_model: 512\n"))
    }

    func testFromJSONRejectsUnknownKeys() {
        assertConfigError(["JSON", "moe.topk", "did you mean moe.top_k?"]) { _ = try RunConfig.fromJSON("{\"moe\": {\"topk\": 1}}") }
    }

    func testArchitectureDifferences() {
        let a = validBase()
        var b = a
        b.moe.auxLossCoef = 0.02; b.moe.zLossCoef = 1e-3; b.moe.capacityFactor = 1.0
        b.train.lr = 1; b.name = "other"; b.data.train = "x"
        XCTAssertEqual(b.architectureDifferences(from: a), [], "loss weights, capacity, train/data/name may change")
        b.moe.numExperts = 20; b.model.depth = 4; b.model.trunk = .indexed
        XCTAssertEqual(b.architectureDifferences(from: a), ["model.depth", "model.trunk", "moe.num_experts"])
        XCTAssertEqual(b.differences(from: a).first { $0.key == "moe.num_experts" }?.description, "moe.num_experts: 40 -> 20")
        XCTAssertFalse(RunConfig.architectureKeys.contains("moe.aux_loss_coef"))
        XCTAssertTrue(RunConfig.architectureKeys.contains("moe.top_k"))
    }
}

final class PresetTests: XCTestCase {
    static let presets = ["tiny", "cpu-small", "seed-reference", "bench", "bench-seed"]

    func testEveryPresetLoadsAndValidates() throws {
        let dir = TestPaths.repoRoot + "/jobs/configs"
        let found = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") }
        XCTAssertEqual(Set(found), Set(Self.presets.map { $0 + ".yaml" }), "a new preset should be added to this test")
        for name in found {
            let c = try ConfigLoader.load(yamlPath: dir + "/" + name, overrides: [])
            XCTAssertNoThrow(try validate(c, worldSize: 1), name)
            XCTAssertEqual(try ConfigLoader.load(yamlText: c.toYAML()), c, name)
        }
    }

    func testSeedReferenceIsTheSpecDefaults() throws {
        let c = try ConfigLoader.load(yamlPath: TestPaths.repoRoot + "/jobs/configs/seed-reference.yaml", overrides: [])
        var expected = RunConfig()
        expected.train.maxSteps = 20000
        expected.data.train = "data/wikitext-103/train.tok"
        expected.data.valid = "data/wikitext-103/valid.tok"
        expected.data.tokenizer = "data/wikitext-103/tokenizer.json"
        XCTAssertEqual(c, expected, c.differences(from: expected).description)
        for w in [1, 2, 4] { XCTAssertNoThrow(try validate(c, worldSize: w), "world \(w)") }
    }

    func testTinyAndBenchShapes() throws {
        let tiny = try ConfigLoader.load(yamlPath: TestPaths.repoRoot + "/jobs/configs/tiny.yaml", overrides: [])
        XCTAssertEqual([tiny.model.dModel, tiny.model.nHeads, tiny.model.seqLen, tiny.model.depth,
                        tiny.moe.numExperts, tiny.moe.topK, tiny.moe.dFF, tiny.train.globalBatch, tiny.train.maxSteps!],
                       [32, 4, 16, 2, 8, 2, 32, 8, 200])
        XCTAssertTrue(tiny.usesGeneratedCorpus)
        let bench = try ConfigLoader.load(yamlPath: TestPaths.repoRoot + "/jobs/configs/bench.yaml", overrides: [])
        XCTAssertEqual([bench.model.dModel, bench.model.nHeads, bench.model.seqLen, bench.model.depth, bench.model.vocabSize,
                        bench.moe.numExperts, bench.moe.topK, bench.moe.dFF, bench.train.globalBatch],
                       [384, 6, 256, 6, 8192, 40, 2, 1024, 8])
    }
}

/// Routing variant keys (SPEC section 1): invalid combinations name the keys.
final class RoutingKeyTests: XCTestCase {
    private func errors(_ overrides: [String]) throws -> String {
        var c = try ConfigLoader.load(yamlText: "train: {max_steps: 10}", overrides: overrides)
        c.model.vocabSize = 256
        do { try validate(c, worldSize: 1); return "" } catch { return "\(error)" }
    }

    func testPerIterationRoutersNeedASharedPool() throws {
        XCTAssertTrue(try errors(["moe.routers=per_iteration", "moe.experts=indexed"]).contains("moe.routers"))
    }

    func testDenseRunsRefuseRoutingKeys() throws {
        for o in ["moe.router_score=sigmoid", "moe.router_bias_rate=0.001", "moe.aux_scope=sequence", "moe.routers=per_iteration"] {
            let key = String(o.prefix { $0 != "=" })
            XCTAssertTrue(try errors(["moe.num_experts=0", o]).contains(key), o)
        }
    }

    func testUnknownValuesAreRefused() throws {
        XCTAssertThrowsError(try ConfigLoader.load(yamlText: "train: {max_steps: 10}", overrides: ["moe.router_score=relu"]))
        XCTAssertTrue(try errors(["moe.router_bias_rate=-1"]).contains("moe.router_bias_rate"))
    }
}

/// docs/configuration.md against the code's key table: every key documented, no entry for a key
/// that does not exist, and the committed file equal to what the table generates
/// (regenerate with `moe-dist config --markdown > docs/configuration.md`).
final class ConfigurationReferenceTests: XCTestCase {
    func testEveryKeyIsDocumentedAndNoOther() {
        let names = Set(RunConfig.keys.map(\.name))
        XCTAssertEqual(Set(RunConfig.keyDocs.keys), names)
        for (k, d) in RunConfig.keyDocs {
            XCTAssertFalse(d.meaning.isEmpty, k)
            XCTAssertFalse(d.values.isEmpty, k)
        }
    }

    func testTheCommittedReferenceIsTheGeneratedOne() throws {
        let path = TestPaths.repoRoot + "/docs/configuration.md"
        let committed = try String(contentsOfFile: path, encoding: .utf8)
        XCTAssertEqual(committed, RunConfig.referenceMarkdown(),
                       "docs/configuration.md is stale: moe-dist config --markdown > docs/configuration.md")
        // Independent of the generator: each key's row shows the default RunConfig() holds.
        let rows = committed.split(separator: "\n").filter { $0.hasPrefix("| `") }
        XCTAssertEqual(rows.count, RunConfig.keys.count)
        for k in RunConfig.keys {
            let row = rows.first { $0.hasPrefix("| `\(k.name)` |") }
            XCTAssertNotNil(row, k.name)
            XCTAssertTrue(row?.contains("| `\(RunConfig().value(forKey: k.name)!)` |") ?? false, "\(k.name): \(row ?? "")")
        }
    }
}
