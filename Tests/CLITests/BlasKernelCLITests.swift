// Kernel selection through the real binary: a start on generic kernels (reproduced with
// MOE_DIST_BLAS_PRETEND_LOADED=Prescott, as OpenBLAS 0.3.21 does by itself on CPUs it does not know)
// switches to a set that uses the CPU's vector units, verifies it, remembers it, says so in the banner,
// and records it in the checkpoint and the history; a user's OPENBLAS_CORETYPE is left alone.
import XCTest
import Foundation
import HDF5
import TestSupport

final class BlasKernelCLITests: XCTestCase {
    /// The x86 CPU levels as `BlasKernelSelection` labels them, weakest first.
    private let levels = ["SSE only", "AVX", "AVX2+FMA", "AVX-512", "AVX-512+BF16"]
    private let setLevel = ["prescott": 0, "sandybridge": 1, "haswell": 2, "zen": 2, "skylakex": 3, "cooperlake": 4]

    private func bannerLine(_ r: CommandResult) -> String {
        (r.stdout + r.stderr).split(separator: "\n").first { $0.hasPrefix("BLAS: ") }.map(String.init) ?? ""
    }

    func testGenericKernelsAreReplacedVerifiedRememberedAndRecorded() throws {
        try requireBinary()
        let dir = temporaryDirectory("blas")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var env = ["MOE_DIST_BLAS_PRETEND_LOADED": "Prescott", "MOE_DIST_BLAS_CACHE": dir + "/cache.json"]
        let userSet = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"]
        if userSet != nil { env["OPENBLAS_CORETYPE"] = "" }    // this test is about moe-dist's own choice
        let args = ["train", "--config", tinyConfig, "train.max_steps=2"]
        let first = try runCommand(moeDist, args + ["--run-dir", dir + "/a"], environment: env)
        XCTAssertEqual(first.status, 0, first.stderr)
        let banner = bannerLine(first)
        // "BLAS: Cooperlake kernels (detected Prescott on an AVX-512+BF16 CPU; using Cooperlake, verified), ..."
        let cpuLevel = try XCTUnwrap(levels.lastIndex { banner.contains("on an \($0) CPU") || banner.contains("on a \($0) CPU") },
                                     "the banner names the CPU's level: \(banner)")
        let inUse = String(banner.dropFirst("BLAS: ".count).prefix { $0 != " " })
        if cpuLevel == 0 {
            XCTAssertTrue(banner.contains("OpenBLAS's choice"), banner)
        } else {
            XCTAssertTrue(banner.contains("detected Prescott"), banner)
            XCTAssertTrue(banner.contains("using \(inUse), verified"), banner)
            XCTAssertEqual(setLevel[inUse.lowercased()], cpuLevel, "the chosen set \(inUse) fits the CPU: \(banner)")
            let cache = try String(contentsOfFile: dir + "/cache.json", encoding: .utf8)
            XCTAssertTrue(cache.contains("\"\(inUse)\""), cache)
        }
        // The choice is in the checkpoint and the history.
        let ck = try H5File.open(path: dir + "/a/checkpoints/step-00000002.h5", readOnly: true)
        XCTAssertEqual(try ck.stringAttribute("blas_kernels"), inUse)
        XCTAssertTrue(try ck.stringAttribute("blas_kernels_reason").contains(inUse))
        ck.close()
        let m = try H5File.open(path: dir + "/a/metrics.h5", readOnly: true, fileLocking: false)
        XCTAssertEqual(try m.stringAttribute("blas_kernels"), inUse)
        m.close()
        // The next start uses the remembered choice.
        if cpuLevel > 0 {
            let second = try runCommand(moeDist, args + ["--run-dir", dir + "/b"], environment: env)
            XCTAssertEqual(second.status, 0, second.stderr)
            XCTAssertTrue(bannerLine(second).contains("using \(inUse), verified on an earlier start"), bannerLine(second))
        }
    }

    func testTheUsersCoretypeIsRespected() throws {
        try requireBinary()
        let dir = temporaryDirectory("blas-user")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try runCommand(moeDist, ["train", "--config", tinyConfig, "train.max_steps=1",
                                         "--run-dir", dir + "/a"],
                               environment: ["OPENBLAS_CORETYPE": "Sandybridge", "MOE_DIST_BLAS_CACHE": dir + "/cache.json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(bannerLine(r).hasPrefix("BLAS: Sandybridge kernels (OPENBLAS_CORETYPE=Sandybridge set by the user"),
                      bannerLine(r))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/cache.json"), "nothing to remember")
    }

    /// Every rank of an mpirun job makes the same choice before MPI starts.
    func testEveryRankChoosesUnderMpirun() throws {
        try requireBinary()
        let dir = temporaryDirectory("blas-mpi")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (exe, args) = try mpirun(2, ["train", "--config", tinyConfig, "train.max_steps=1", "train.micro_batch=4",
                                         "--run-dir", dir + "/a"])
        // OPENBLAS_VERBOSE=2 makes OpenBLAS print "Core: <set>" each time it loads a kernel set, on every rank.
        let r = try runCommand(exe, ["-x", "MOE_DIST_BLAS_PRETEND_LOADED=Prescott", "-x", "MOE_DIST_BLAS_CACHE=\(dir)/c.json",
                                     "-x", "OPENBLAS_VERBOSE=2"] + args)
        XCTAssertEqual(r.status, 0, r.stderr)
        let inUse = String(bannerLine(r).dropFirst("BLAS: ".count).prefix { $0 != " " })
        let ck = try H5File.open(path: dir + "/a/checkpoints/step-00000001.h5", readOnly: true)
        defer { ck.close() }
        XCTAssertEqual(try ck.stringAttribute("blas_kernels"), inUse)
        let loads = (r.stdout + r.stderr).components(separatedBy: "Core: \(inUse)").count - 1
        XCTAssertGreaterThanOrEqual(loads, 2, "both ranks loaded \(inUse):\n\(r.stderr)")
    }
}
