// `moe-dist bench` and `moe-dist estimate` end to end: valid JSON with the documented fields,
// alone and under mpirun -np 2.
import XCTest
import Foundation
import TestSupport

final class BenchCLITests: XCTestCase {
    private func json(_ r: CommandResult, _ what: String) throws -> [String: Any] {
        XCTAssertEqual(r.status, 0, "\(what): \(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
        return try XCTUnwrap(obj as? [String: Any], "\(what) prints one JSON object: \(r.stdout)")
    }

    private func checkBench(_ j: [String: Any], world: Int) throws {
        for key in ["blas_core_name", "sgemm", "machine_peak_gflops", "tokens_per_second", "flops_per_token",
                    "flops_per_token_formula", "mfu", "mfu_definition", "time_split_seconds", "time_split_fraction",
                    "time_split_source", "communication_fraction", "peak_resident_bytes", "estimate",
                    "estimated_total_bytes", "peak_over_estimate", "load_average_start", "cpu_seconds_per_step",
                    "blas_kernel_reason", "kernel_set_peaks", "best_kernel_set", "best_machine_peak_gflops", "mfu_in_use", "rank_wait_fraction",
                    "rank_wait_definition"] {
            XCTAssertNotNil(j[key], "field \(key)")
        }
        XCTAssertEqual(j["world_size"] as? Int, world)
        XCTAssertFalse((j["blas_core_name"] as? String ?? "").isEmpty)
        let sgemm = try XCTUnwrap(j["sgemm"] as? [String: Any])
        XCTAssertGreaterThan(sgemm["single_thread"] as? Double ?? 0, 0)
        XCTAssertGreaterThan(sgemm["all_thread"] as? Double ?? 0, 0)
        XCTAssertGreaterThan(j["tokens_per_second"] as? Double ?? 0, 0)
        // Both peaks: the set in use and the best set offered; MFU is against the best, so never above 1.
        let inUse = j["blas_core_name"] as? String ?? ""
        let peaks = try XCTUnwrap(j["kernel_set_peaks"] as? [[String: Any]])
        XCTAssertEqual(peaks.first?["name"] as? String, inUse, "the set in use is measured first")
        let machinePeak = j["machine_peak_gflops"] as? Double ?? 0, best = j["best_machine_peak_gflops"] as? Double ?? 0
        XCTAssertGreaterThan(machinePeak, 0)
        XCTAssertGreaterThanOrEqual(best, machinePeak, "the best set's peak is the largest measured")
        let bestOfSets = peaks.map { $0["machine_gflops"] as? Double ?? 0 }.max() ?? 0
        XCTAssertEqual(best, max(bestOfSets, machinePeak), accuracy: 1e-9 * best, "best = the largest peak measured")
        XCTAssertTrue(peaks.contains { $0["name"] as? String == j["best_kernel_set"] as? String } || j["best_kernel_set"] as? String == inUse)
        let mfu = j["mfu"] as? Double ?? -1, mfuInUse = j["mfu_in_use"] as? Double ?? -1
        XCTAssertTrue(mfu > 0 && mfu <= 1, "mfu \(mfu) must be in (0, 1]")
        XCTAssertTrue(mfuInUse >= mfu, "MFU against the set in use \(mfuInUse) >= against the best \(mfu)")
        XCTAssertFalse((j["blas_kernel_reason"] as? String ?? "").isEmpty)
        let split = try XCTUnwrap(j["time_split_fraction"] as? [String: Double])
        XCTAssertEqual(Set(split.keys), ["attention", "experts", "router_dispatch", "all_to_all", "all_reduce", "head",
                                         "optimizer", "rank_wait", "other"])
        XCTAssertEqual(split.values.reduce(0, +), 1, accuracy: 0.05)
        // Waiting for slower ranks is measured apart from the collectives, and only where there are other ranks.
        let wait = j["rank_wait_fraction"] as? Double ?? -1, comm = j["communication_fraction"] as? Double ?? -1
        // Each is a maximum over the ranks, possibly of different ranks (one waits, another communicates), so
        // each is a fraction of a step but their sum may exceed 1 (seen under load: 0.48 + 0.68).
        XCTAssertTrue(wait >= 0 && comm >= 0 && wait <= 1 && comm <= 1, "rank wait \(wait), communication \(comm)")
        if world == 1 { XCTAssertEqual(wait, 0, "one rank waits for nobody") }
        // Expert lending: possible only with other ranks in the expert group; its counts are consistent.
        XCTAssertEqual(j["expert_lending"] as? Bool, world > 1)
        let uses = j["lending_uses"] as? Int ?? -1, lent = j["lending_uses_with_loans"] as? Int ?? -1
        let rowsLent = j["rows_lent_fraction"] as? Double ?? -1, perUse = j["loans_per_use"] as? Double ?? -1
        if world == 1 { XCTAssertEqual(uses, 0, "one rank plans no loans") } else { XCTAssertGreaterThan(uses, 0) }
        XCTAssertTrue(lent >= 0 && lent <= uses, "uses with loans \(lent) of \(uses)")
        XCTAssertTrue(rowsLent >= 0 && rowsLent <= 1 && perUse >= 0 && perUse <= 4, "rows lent \(rowsLent), per use \(perUse)")
        XCTAssertGreaterThan(j["peak_resident_bytes"] as? Int ?? 0, 0)
        let est = try XCTUnwrap(j["estimate"] as? [String: Any])
        for key in ["parameters", "parameter_bytes", "gradient_bytes", "optimizer_bytes", "activation_bytes", "scratch_bytes"] {
            XCTAssertNotNil(est[key], "estimate.\(key)")
        }
    }

    func testBenchJSON() throws {
        try requireBinary()
        let r = try runCommand(moeDist, ["bench", "--config", tinyConfig, "--steps", "2", "--json"])
        try checkBench(try json(r, "bench"), world: 1)
    }

    func testBenchJSONUnderMpirun() throws {
        try requireBinary()
        let (exe, args) = try mpirun(2, ["bench", "--config", tinyConfig, "--steps", "2", "--json"])
        let r = try runCommand(exe, args)
        let j = try json(r, "mpirun -np 2 bench")        // rank 0 alone prints
        try checkBench(j, world: 2)
        XCTAssertEqual(j["micro_batch"] as? Int, 4, "micro-batch = global batch 8 / 2 ranks")
    }

    func testEstimateTableJSON() throws {
        try requireBinary()
        let r = try runCommand(moeDist, ["estimate", "--config", TestPaths.repoRoot + "/jobs/configs/seed-reference.yaml",
                                         "--table", "--scale-batch", "--json"])
        let j = try json(r, "estimate")
        XCTAssertEqual(j["batch_rule"] as? String, "scale_batch")
        XCTAssertNotNil(j["formulas"])
        let rows = try XCTUnwrap(j["estimates"] as? [[String: Any]])
        XCTAssertEqual(rows.map { $0["world_size"] as? Int ?? 0 }, [8, 16, 32, 64, 128, 256, 512, 1024])
        let total = Set(rows.map { $0["total_parameters"] as? Int ?? 0 })
        XCTAssertEqual(total.count, 1)
        let experts = rows.map { $0["expert_parameters_per_rank"] as? Int ?? 0 }
        XCTAssertEqual(experts, experts.sorted(by: >), "expert parameters per rank never grow with the world")
        for row in rows {
            let mem = try XCTUnwrap(row["memory"] as? [String: Any])
            XCTAssertEqual(mem["parameter_bytes"] as? Int, 4 * (row["parameters_per_rank"] as? Int ?? 0))
            XCTAssertGreaterThan(row["all_to_all_bytes_per_rank"] as? Double ?? 0, 0)
        }
    }

    /// Without --scale-batch estimate follows train's rule: global batch 32 stays, the micro-batch shrinks
    /// to fit (8 per rank at 1-4 ranks, 4 at 8, 2 at 16, 1 at 32), larger worlds are listed as not shown.
    func testEstimateTableFollowsTheTrainBatchRule() throws {
        try requireBinary()
        let r = try runCommand(moeDist, ["estimate", "--config", TestPaths.repoRoot + "/jobs/configs/seed-reference.yaml",
                                         "--table", "--json"])
        let j = try json(r, "estimate")
        XCTAssertEqual(j["batch_rule"] as? String, "fit_micro_batch")
        let rows = try XCTUnwrap(j["estimates"] as? [[String: Any]])
        XCTAssertEqual(rows.map { $0["world_size"] as? Int ?? 0 }, [8, 16, 32])
        XCTAssertEqual(rows.map { $0["global_batch"] as? Int ?? 0 }, [32, 32, 32])
        XCTAssertEqual(rows.map { $0["micro_batch"] as? Int ?? 0 }, [4, 2, 1])
        XCTAssertEqual(j["unsplittable_world_sizes"] as? [Int], [64, 128, 256, 512, 1024])
    }

    /// With neither --world nor --table: the powers of two up to the global batch (tiny: 8).
    func testEstimateDefaultWorldSizes() throws {
        try requireBinary()
        let r = try runCommand(moeDist, ["estimate", "--config", tinyConfig, "--json"])
        let rows = try XCTUnwrap(try json(r, "estimate")["estimates"] as? [[String: Any]])
        XCTAssertEqual(rows.map { $0["world_size"] as? Int ?? 0 }, [1, 2, 4, 8])
        XCTAssertEqual(rows.map { $0["micro_batch"] as? Int ?? 0 }, [8, 4, 2, 1])
    }

    /// A listed world size the batch cannot be split over: exit 2 and the override that fixes it.
    func testEstimateNamesTheOverrideForAnUnsplittableWorld() throws {
        try requireBinary()
        let r = try runCommand(moeDist, ["estimate", "--config", tinyConfig, "--world", "3"])
        XCTAssertEqual(r.status, 2, r.stderr)
        XCTAssertTrue(r.stderr.contains("train.global_batch=9"), r.stderr)
        let fixed = try runCommand(moeDist, ["estimate", "--config", tinyConfig, "--world", "3", "train.global_batch=9"])
        XCTAssertEqual(fixed.status, 0, fixed.stderr)
    }

    /// bench sets its own budget: a configuration without train.max_steps / max_tokens is measured.
    func testBenchWithoutABudget() throws {
        try requireBinary()
        let r = try runCommand(moeDist, ["bench", "--config", tinyConfig, "train.max_steps=null", "--steps", "2",
                                         "--warmup", "0", "--json"])
        let j = try json(r, "bench without a budget")
        XCTAssertEqual(j["steps"] as? Int, 2)
    }

    func testEstimateRejectsAnExpertGroupThatDoesNotDivideTheWorld() throws {
        try requireBinary()
        let r = try runCommand(moeDist, ["estimate", "--config", tinyConfig, "--world", "8", "--expert-parallel", "3"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--expert-parallel"), r.stderr)
    }
}
