// BLAS kernel selection: the rules on made-up CPUs and libraries (a fake OpenBLAS that records what it
// was asked to load), and the real switch on this machine's OpenBLAS checked by products against a
// Double reference.
import XCTest
import TestSupport
import Foundation
@testable import Kernels

/// A pretend DYNAMIC_ARCH OpenBLAS: it has `available` sets, starts with `loaded`, and the sets in
/// `wrong` compute wrong results.
private final class FakeLibrary {
    var inUse: String
    let available: Set<String>
    let wrong: Set<String>
    var asked: [String] = []
    init(loaded: String, available: [String], wrong: [String] = []) {
        inUse = loaded; self.available = Set(available.map { $0.lowercased() }); self.wrong = Set(wrong)
    }
    func switchTo(_ name: String) -> String {
        asked.append(name)
        if available.contains(name.lowercased()) { inUse = name }
        return inUse
    }
    func verify() -> Bool { !wrong.contains(inUse) }
}

private let sapphire = CPUFeatures(vendor: "GenuineIntel", family: 6, model: 207, avx: true, avx2: true, fma: true,
                                   avx512f: true, avx512bw: true, avx512dq: true, avx512vl: true, avx512bf16: true)
private let skylake = CPUFeatures(vendor: "GenuineIntel", family: 6, model: 85, avx: true, avx2: true, fma: true,
                                  avx512f: true, avx512bw: true, avx512dq: true, avx512vl: true)
private let zen3 = CPUFeatures(vendor: "AuthenticAMD", family: 25, model: 33, avx: true, avx2: true, fma: true)
private let allX86 = ["Prescott", "Nehalem", "Sandybridge", "Haswell", "Zen", "SkylakeX", "Cooperlake"]

final class BlasKernelSelectionTests: XCTestCase {
    private func decide(_ cpu: CPUFeatures, _ lib: FakeLibrary, user: String? = nil, remembered: String? = nil,
                        canSwitch: Bool = true) -> (BlasKernelChoice, String?) {
        let r = BlasKernelSelection.decide(cpu: cpu, loaded: lib.inUse, userCoretype: user, remembered: remembered,
                                           canSwitch: canSwitch, switchTo: lib.switchTo, verify: lib.verify)
        return (r.choice, r.newlyVerified)
    }

    func testLevelsOfCPUsAndKernelSets() {
        XCTAssertEqual(sapphire.level, .avx512bf16)
        XCTAssertEqual(skylake.level, .avx512)
        XCTAssertEqual(zen3.level, .avx2)
        var noBW = skylake; noBW.avx512bw = false
        XCTAssertEqual(noBW.level, .avx2, "AVX-512 needs F, BW, DQ and VL together")
        XCTAssertEqual(CPUFeatures(vendor: "GenuineIntel", avx: true).level, .avx)
        XCTAssertEqual(BlasKernelSelection.level(ofKernelSet: "Prescott"), .baseline)
        XCTAssertEqual(BlasKernelSelection.level(ofKernelSet: "SKYLAKEX"), .avx512)
        XCTAssertEqual(BlasKernelSelection.level(ofKernelSet: "Cooperlake"), .avx512bf16)
        XCTAssertNil(BlasKernelSelection.level(ofKernelSet: "neoversen1"))
    }

    func testCandidatesAreBestFirstAndNeverBeyondTheCPU() {
        XCTAssertEqual(BlasKernelSelection.candidates(for: sapphire), ["Cooperlake", "SkylakeX", "Haswell", "Zen", "Sandybridge"])
        XCTAssertEqual(BlasKernelSelection.candidates(for: skylake), ["SkylakeX", "Haswell", "Zen", "Sandybridge"])
        XCTAssertEqual(BlasKernelSelection.candidates(for: zen3), ["Zen", "Haswell", "Sandybridge"])
        XCTAssertEqual(BlasKernelSelection.candidates(for: CPUFeatures(vendor: "GenuineIntel")), [])
    }

    func testGenericKernelsOnAnAVX512CPUSwitchToTheBestVerifiedSet() {
        let lib = FakeLibrary(loaded: "Prescott", available: allX86)
        let (c, verified) = decide(sapphire, lib)
        XCTAssertEqual(c.inUse, "Cooperlake")
        XCTAssertEqual(c.how, .switched)
        XCTAssertEqual(c.loaded, "Prescott")
        XCTAssertEqual(verified, "Cooperlake", "a newly verified choice is remembered")
        XCTAssertEqual(c.reason, "detected Prescott on an AVX-512+BF16 CPU; using Cooperlake, verified")
    }

    func testAFailedVerificationFallsBackToTheNextSet() {
        let lib = FakeLibrary(loaded: "Prescott", available: allX86, wrong: ["Cooperlake"])
        let (c, verified) = decide(sapphire, lib)
        XCTAssertEqual(c.inUse, "SkylakeX")
        XCTAssertEqual(verified, "SkylakeX")
        XCTAssertEqual(lib.asked, ["Cooperlake", "SkylakeX"])
    }

    func testASetMissingFromTheLibraryIsSkipped() {
        let lib = FakeLibrary(loaded: "Prescott", available: ["Prescott", "Haswell", "SkylakeX"])
        let (c, _) = decide(sapphire, lib)
        XCTAssertEqual(c.inUse, "SkylakeX")
    }

    func testWhenNothingPassesTheLoadedSetIsRestored() {
        let lib = FakeLibrary(loaded: "Prescott", available: allX86, wrong: ["Cooperlake", "SkylakeX", "Haswell", "Zen", "Sandybridge"])
        let (c, verified) = decide(sapphire, lib)
        XCTAssertEqual(c.how, .noBetterSet)
        XCTAssertEqual(c.inUse, "Prescott")
        XCTAssertEqual(lib.inUse, "Prescott", "the library is back on the set it loaded")
        XCTAssertNil(verified)
        XCTAssertTrue(c.reason.contains("Cooperlake: wrong results"), c.reason)
    }

    func testTheLibrarysOwnFittingChoiceIsKept() {
        let lib = FakeLibrary(loaded: "SkylakeX", available: allX86)
        let (c, _) = decide(skylake, lib)
        XCTAssertEqual(c.how, .libraryChoice)
        XCTAssertEqual(c.inUse, "SkylakeX")
        XCTAssertEqual(lib.asked, [], "nothing is switched and nothing verified")
        let zen = FakeLibrary(loaded: "Zen", available: allX86)
        XCTAssertEqual(decide(zen3, zen).0.how, .libraryChoice)
    }

    func testTheUsersCoretypeIsRespected() {
        let lib = FakeLibrary(loaded: "Haswell", available: allX86)
        let (c, _) = decide(sapphire, lib, user: "Haswell")
        XCTAssertEqual(c.how, .userSet)
        XCTAssertEqual(c.inUse, "Haswell")
        XCTAssertEqual(lib.asked, [])
    }

    func testARememberedChoiceIsUsedWithoutVerifying() {
        let lib = FakeLibrary(loaded: "Prescott", available: allX86, wrong: ["SkylakeX"])
        let (c, verified) = decide(sapphire, lib, remembered: "SkylakeX")
        XCTAssertEqual(c.how, .remembered, "the earlier verification is trusted (the fake's verify would fail)")
        XCTAssertEqual(c.inUse, "SkylakeX")
        XCTAssertNil(verified)
        // A remembered set the library no longer has: full selection.
        let other = FakeLibrary(loaded: "Prescott", available: ["Prescott", "Haswell"])
        XCTAssertEqual(decide(sapphire, other, remembered: "Cooperlake").0.inUse, "Haswell")
    }

    func testASingleTargetLibraryIsReportedNotSwitched() {
        let lib = FakeLibrary(loaded: "Prescott", available: allX86)
        let (c, _) = decide(sapphire, lib, canSwitch: false)
        XCTAssertEqual(c.how, .fixed)
        XCTAssertEqual(lib.asked, [])
    }

    func testCachePathFollowsTheEnvironment() {
        XCTAssertEqual(BlasKernelSelection.cachePath(environment: ["MOE_DIST_BLAS_CACHE": "/x/k.json", "HOME": "/h"]), "/x/k.json")
        XCTAssertEqual(BlasKernelSelection.cachePath(environment: ["XDG_CACHE_HOME": "/c", "HOME": "/h"]),
                       "/c/moe-dist/blas-kernels.json")
        XCTAssertEqual(BlasKernelSelection.cachePath(environment: ["HOME": "/h"]), "/h/.cache/moe-dist/blas-kernels.json")
    }

    func testRememberedChoicesRoundTripThroughTheCacheFile() throws {
        let dir = NSTemporaryDirectory() + "blas-cache-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/sub/k.json"
        BlasKernelSelection.remember("Cooperlake", key: "cpu A | lib 1", path: path)
        BlasKernelSelection.remember("Haswell", key: "cpu B | lib 1", path: path)
        XCTAssertEqual(BlasKernelSelection.readCache(path), ["cpu A | lib 1": "Cooperlake", "cpu B | lib 1": "Haswell"])
        XCTAssertEqual(BlasKernelSelection.readCache(dir + "/missing.json"), [:])
    }

    /// On this machine's real OpenBLAS: every candidate set the library has computes products the reference
    /// agrees with, the verification catches a deliberately wrong product, and the original set comes back.
    func testRealLibrarySwitchesAndVerifies() throws {
        let cpu = CPUFeatures.current
        guard cpu.vendor != "" else { throw missingHardware("not an x86-64 CPU: no kernel selection") }
        XCTAssertTrue(Blas.canSwitchKernels, "Debian's OpenBLAS is a DYNAMIC_ARCH build")
        let original = Blas.coreName
        defer { Blas.switchKernels(to: original) }
        XCTAssertTrue(BlasKernelSelection.productsAgree(), "the loaded set \(original)")
        var switched = 0
        for name in BlasKernelSelection.candidates(for: cpu) {
            let now = Blas.switchKernels(to: name)
            guard now.lowercased() == name.lowercased() else { continue }
            switched += 1
            XCTAssertTrue(BlasKernelSelection.productsAgree(), "kernel set \(name)")
        }
        if cpu.level >= .avx { XCTAssertGreaterThan(switched, 0, "at least one candidate for \(cpu)") }
        XCTAssertEqual(Blas.switchKernels(to: original), original)
    }

    /// The verification fails for products that are slightly wrong: one element off by 1e-3 relative, the
    /// last k term dropped, or a product that skips work above a size (as a kernel with a bad tail would).
    func testVerificationCatchesWrongProducts() {
        func blas(_ tA: Bool, _ tB: Bool, _ M: Int, _ N: Int, _ K: Int, _ alpha: Float, _ A: UnsafePointer<Float>,
                  _ lda: Int, _ B: UnsafePointer<Float>, _ ldb: Int, _ beta: Float, _ C: UnsafeMutablePointer<Float>,
                  _ ldc: Int) {
            Blas.gemm(transA: tA, transB: tB, M: M, N: N, K: K, alpha: alpha, A: A, lda: lda, B: B, ldb: ldb,
                      beta: beta, C: C, ldc: ldc)
        }
        XCTAssertTrue(BlasKernelSelection.productsAgree(using: blas), "the real product passes")
        XCTAssertFalse(BlasKernelSelection.productsAgree(using: { tA, tB, M, N, K, al, A, lda, B, ldb, be, C, ldc in
            blas(tA, tB, M, N, K, al, A, lda, B, ldb, be, C, ldc)
            C[ldc + 3] += 0.05 * max(1, abs(C[ldc + 3]))          // one element wrong
        }))
        XCTAssertFalse(BlasKernelSelection.productsAgree(using: { tA, tB, M, N, K, al, A, lda, B, ldb, be, C, ldc in
            blas(tA, tB, M, N, K - 1, al, A, lda, B, ldb, be, C, ldc)   // drops the last term (when not transposed)
        }))
        XCTAssertFalse(BlasKernelSelection.productsAgree(using: { tA, tB, M, N, K, al, A, lda, B, ldb, be, C, ldc in
            if M * N * K > 1_000_000 { return }                      // the threaded size is never computed (NaN stays)
            blas(tA, tB, M, N, K, al, A, lda, B, ldb, be, C, ldc)
        }))
    }
}
