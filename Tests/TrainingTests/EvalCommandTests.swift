// `moe-dist eval` through the binary equals the mean NLL computed independently here: a tiny
// model trained a few steps and saved as a checkpoint, a token file of the generated validation
// split, M not a multiple of T; the reference scores every window alone (batch of one, world of
// one) with the checkpoint's parameters loaded by Checkpoint.loadParameters. Checked at world
// sizes 1 and 2 (--emulate-ranks, and mpirun -np 1/2 when mpirun is installed) to 1e-6 relative.
// Plus: bad inputs give one line naming the file and a non-zero exit.
import XCTest
import Collectives
import Configuration
import DataPipeline
import Model
import Training
import TestSupport

final class EvalCommandTests: XCTestCase {
    struct Run { var status: Int32; var stdout: String; var stderr: String }

    func run(_ exe: String, _ args: [String]) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_NUM_THREADS"] = "1"
        env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
        p.environment = env
        let dir = NSTemporaryDirectory() + "moe-dist-evalcmd-\(UUID().uuidString)"
        FileManager.default.createFile(atPath: dir + ".out", contents: nil)
        FileManager.default.createFile(atPath: dir + ".err", contents: nil)
        defer { try? FileManager.default.removeItem(atPath: dir + ".out"); try? FileManager.default.removeItem(atPath: dir + ".err") }
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + ".out"))
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + ".err"))
        try p.run()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, stdout: (try? String(contentsOfFile: dir + ".out", encoding: .utf8)) ?? "",
                   stderr: (try? String(contentsOfFile: dir + ".err", encoding: .utf8)) ?? "")
    }

    /// A checkpoint of tiny (8 experts) after 5 steps, and a token file of the first 600 validation tokens.
    func fixture() throws -> (checkpoint: String, tokens: String, config: RunConfig) {
        let dir = NSTemporaryDirectory() + "moe-dist-evalcmd-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (c, data) = try tinyRun(["train.max_steps=5"])
        let trainer = try Trainer(config: c, ctx: .single(numExperts: c.moe.numExperts), train: data.train)
        for _ in 0 ..< 5 { _ = trainer.trainStep() }
        let ck = dir + "/step-5.h5"
        try Checkpoint.save(trainer, to: ck)
        let tok = dir + "/valid.tok"
        let w = try TokenFileWriter(path: tok, vocabSize: data.vocabSize)
        var ids = [Int32](repeating: 0, count: 600)
        ids.withUnsafeMutableBufferPointer { data.valid!.copyTokens(0 ..< 600, into: $0.baseAddress!) }
        try w.append(ids)
        try w.finish()
        return (ck, tok, c)
    }

    func testEvalCommandMatchesIndependentMeanNLLAtWorldSizes1And2() throws {
        let exe = TestPaths.binary
        guard FileManager.default.isExecutableFile(atPath: exe) else { throw missingTool("\(exe) is not built") }
        let (ck, tok, c) = try fixture()
        let T = c.model.seqLen
        let M = 7 * T + 5                                       // not a multiple of T
        // Reference: the checkpoint's parameters in a world of one, each window scored alone.
        let model = RecurrentMoEModel(config: c, ctx: .single(numExperts: c.moe.numExperts))
        try Checkpoint.loadParameters(ck, into: model.store)
        let file = try TokenFile(path: tok)
        let tokens = file.tokens(0 ..< M)
        var sum = 0.0, scored = 0, s = 0
        while s < M - 1 {
            let L = min(T, M - 1 - s)
            let r = model.step(inputs: Array(tokens[s ..< s + L]), targets: Array(tokens[s + 1 ..< s + L + 1]), B: 1, T: L,
                               scales: LossScales(ce: 1, aux: 0, z: 0), applyCapacity: false, backward: false)
            sum += r.ceSum; scored += L; s += T
        }
        let reference = sum / Double(scored)

        var launches: [(String, String, [String])] = []
        let args = ["eval", "--checkpoint", ck, "--data", tok, "--max-tokens", "\(M)", "--json"]
        for n in [1, 2] { launches.append(("--emulate-ranks \(n)", exe, args + ["--emulate-ranks", "\(n)"])) }
        if let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            for n in [1, 2] { launches.append(("mpirun -np \(n)", mpirun, ["--allow-run-as-root", "--oversubscribe", "-np", "\(n)", exe] + args)) }
        }
        for (label, program, a) in launches {
            let r = try run(program, a)
            XCTAssertEqual(r.status, 0, "\(label): \(r.stderr)")
            let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            XCTAssertEqual(obj?["scored"] as? Int, M - 1, label)
            XCTAssertEqual(obj?["checkpoint"] as? String, ck)
            XCTAssertEqual(obj?["data"] as? String, tok)
            assertClose(obj?["loss"] as? Double ?? .nan, reference, rtol: 1e-6, atol: 0, "\(label) loss")
            assertClose(obj?["ppl"] as? Double ?? .nan, exp(reference), rtol: 1e-6, atol: 0, "\(label) ppl")
        }
        // Default M: the whole file; the human line.
        let whole = try run(exe, ["eval", "--checkpoint", ck, "--data", tok])
        XCTAssertEqual(whole.status, 0, whole.stderr)
        XCTAssertTrue(whole.stdout.contains("| 599 tokens scored |"), whole.stdout)
    }

    func testEvalCommandBadInputsNameTheFile() throws {
        let exe = TestPaths.binary
        guard FileManager.default.isExecutableFile(atPath: exe) else { throw missingTool("\(exe) is not built") }
        let (ck, tok, _) = try fixture()
        let other = URL(fileURLWithPath: tok).deletingLastPathComponent().path + "/v300.tok"
        let w = try TokenFileWriter(path: other, vocabSize: 300)
        try w.append([Int32](repeating: 1, count: 100))
        try w.finish()
        for (args, named) in [(["--checkpoint", ck + ".missing", "--data", tok], ck + ".missing"),
                              (["--checkpoint", ck, "--data", tok + ".missing"], tok + ".missing"),
                              (["--checkpoint", ck, "--data", other], other)] {
            let r = try run(exe, ["eval"] + args)
            XCTAssertNotEqual(r.status, 0)
            let lines = r.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(named), r.stderr)
        }
    }
}
