// The dense control of ablation A5 (moe.num_experts=0) through the real CLI: train, eval and a resume, at
// one rank and under mpirun. Its step crashed in release builds (the step report's per-iteration arrays
// were never sized when E = 0; Trainer.resetReport), which no model-level test reached.
import XCTest
import Foundation
import TestSupport

final class DenseControlCLITests: XCTestCase {
    private func run(_ args: [String], np: Int? = nil) throws -> CommandResult {
        if let np {
            let (exe, a) = try mpirun(np, args)
            return try runCommand(exe, a, environment: ["OPENBLAS_NUM_THREADS": "1"])
        }
        return try runCommand(moeDist, args, environment: ["OPENBLAS_NUM_THREADS": "1"])
    }

    private func trainEvalResume(np: Int?) throws -> [Double] {
        let dir = temporaryDirectory("dense")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let common = ["train", "--config", tinyConfig, "--run-dir", dir, "moe.num_experts=0", "train.log_interval=1",
                      "train.eval_interval=10", "train.checkpoint_interval=10"]
        let t = try run(common + ["train.max_steps=10"], np: np)
        XCTAssertEqual(t.status, 0, "train np \(np ?? 1): \(t.stderr)")
        XCTAssertTrue(t.stdout.contains("step 10/10"), t.stdout)
        let ck = dir + "/checkpoints/step-00000010.h5"
        // The generated corpus is not a file: score the checkpoint on a token file of the same vocabulary.
        let tok = dir + "/valid.tok"
        try writeTokenFile(tok, ids: (0 ..< 600).map { Int32(($0 * 37) % 256) }, vocabSize: 256)
        let e = try run(["eval", "--checkpoint", ck, "--data", tok, "--json"], np: np)
        XCTAssertEqual(e.status, 0, "eval np \(np ?? 1): \(e.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as? [String: Any]
        let evalLoss = try XCTUnwrap(obj?["loss"] as? Double)
        XCTAssertTrue(evalLoss.isFinite && evalLoss > 0, "eval loss \(evalLoss)")
        let r = try run(common + ["train.max_steps=11", "--resume", "auto", "--allow-config-change"], np: np)
        XCTAssertEqual(r.status, 0, "resume np \(np ?? 1): \(r.stderr)")
        XCTAssertTrue(r.stdout.contains("step 11/11"), r.stdout)
        let (losses, _) = try lossesAndCheckpointTensors(runDir: dir, step: 11, groups: [])
        XCTAssertEqual(losses.count, 11)
        XCTAssertTrue(losses.allSatisfy(\.isFinite), "\(losses)")
        return losses
    }

    func testDenseControlTrainsEvaluatesAndResumes() throws {
        try requireBinary()
        let one = try trainEvalResume(np: nil)
        let two = try trainEvalResume(np: 2)
        // SPEC invariance: the same global batch on 1 and 2 ranks, so the same losses up to summation order.
        assertClose(two, one, rtol: 1e-5, atol: 0, "dense losses, -np 2 against one rank")
    }
}

/// A MOETOKS1 file of `ids` (header as SPEC section 8, fingerprint 0).
func writeTokenFile(_ path: String, ids: [Int32], vocabSize: Int) throws {
    var d = Data("MOETOKS1".utf8)
    func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
    let wide = vocabSize > 65536
    put(UInt32(1)); put(UInt32(wide ? 4 : 2)); put(UInt64(ids.count)); put(UInt32(vocabSize)); put(UInt64(0))
    d.append(Data(count: 64 - d.count))
    for id in ids { if wide { put(UInt32(bitPattern: id)) } else { put(UInt16(truncatingIfNeeded: id)) } }
    try d.write(to: URL(fileURLWithPath: path))
}
