// BlasKernelSelection: run OpenBLAS with kernels that use this CPU's vector units.
//
// A DYNAMIC_ARCH OpenBLAS picks its kernel set once, when it is loaded, from a table of the CPUs it
// knows. A CPU newer than the library is not in the table: Debian's 0.3.21 runs its generic SSE3
// "Prescott" set on an AVX-512 Xeon of 2024, about 10x below the sgemm peak of its "Cooperlake" set.
// At start (every rank, before MPI and before any product) moe-dist compares the loaded set's vector
// level with the CPU's (CPUID) and, when the set falls short, asks the library to load the best set it
// has for the CPU's extensions. Re-selection happens in this process through OpenBLAS's own exported
// `gotoblas_dynamic_quit/init` (see COpenBLAS.h) rather than by re-executing with OPENBLAS_CORETYPE:
// it works the same under mpirun, srun, a single rank and emulated ranks, needs no second process
// start, and lets `bench` measure every set side by side.
//
// Some builds compute wrong results on CPUs they do not know, so a new choice is checked with small
// products against a plain reference before it is trusted (the next set is tried when it disagrees),
// and a verified choice is remembered per CPU model and library build, so later starts cost nothing.
// A user's OPENBLAS_CORETYPE always wins.
import Foundation

/// Which kernel set runs, and why: shown in the run banner, `bench` and the files a run writes.
public struct BlasKernelChoice: Codable, Equatable, Sendable {
    public enum How: String, Codable, Sendable {
        case userSet = "user_set"             // OPENBLAS_CORETYPE was set: respected
        case libraryChoice = "library_choice" // OpenBLAS's own choice already fits the CPU
        case switched                         // moe-dist chose and verified a better set now
        case remembered                       // as `switched`, verified on an earlier start (cache)
        case noBetterSet = "no_better_set"    // nothing better passed verification (or exists)
        case fixed                            // a single-target OpenBLAS: the set cannot change
        case notX86 = "not_x86"               // no selection outside x86-64
    }
    /// The set OpenBLAS loaded by itself.
    public var loaded: String
    /// The set in use now.
    public var inUse: String
    public var how: How
    /// One sentence, e.g. "detected Prescott on an AVX-512+BF16 CPU; using Cooperlake, verified".
    public var reason: String
    /// The CPU as CPUID describes it, and its vector level.
    public var cpu: String
    public var cpuLevel: String
}

public enum BlasKernelSelection {
    // MARK: Pure rules (unit-tested)

    /// The vector level of an OpenBLAS x86-64 kernel set, by the name `openblas_get_corename` reports;
    /// nil for names this table does not know (other architectures, future sets): those are left alone.
    public static func level(ofKernelSet name: String) -> VectorLevel? {
        switch name.lowercased() {
        case "cooperlake", "sapphirerapids": return .avx512bf16
        case "skylakex": return .avx512
        case "haswell", "zen", "excavator": return .avx2
        case "sandybridge", "bulldozer", "piledriver", "steamroller": return .avx
        case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "nano", "opteron", "opteron_sse3",
             "barcelona", "bobcat", "katmai", "coppermine", "northwood", "banias", "athlon", "generic":
            return .baseline
        default: return nil
        }
    }

    /// Kernel sets worth trying on `cpu`, best first: those its extensions can run, most capable first
    /// (on AVX2-only AMD parts OpenBLAS's Zen set before Haswell). Sets beyond the CPU are never listed.
    public static func candidates(for cpu: CPUFeatures) -> [String] {
        let avx2 = cpu.vendor == "AuthenticAMD" ? ["Zen", "Haswell"] : ["Haswell", "Zen"]
        let ordered: [(String, VectorLevel)] = [("Cooperlake", .avx512bf16), ("SkylakeX", .avx512)]
            + avx2.map { ($0, .avx2) } + [("Sandybridge", .avx)]
        return ordered.filter { $0.1 <= cpu.level }.map(\.0)
    }

    /// The whole decision, with the effects passed in so that tests can play any library and CPU.
    /// - loaded: the set OpenBLAS runs now; userCoretype: OPENBLAS_CORETYPE if set;
    /// - remembered: a set verified on an earlier start for this CPU and library (used without checking);
    /// - switchTo: loads a set and returns the name then in use; verify: checks the set in use.
    /// Returns the choice and, when a set was newly verified, that set (to remember).
    public static func decide(cpu: CPUFeatures, loaded: String, userCoretype: String?, remembered: String?,
                              canSwitch: Bool, switchTo: (String) -> String, verify: () -> Bool)
        -> (choice: BlasKernelChoice, newlyVerified: String?) {
        func choice(_ inUse: String, _ how: BlasKernelChoice.How, _ reason: String) -> BlasKernelChoice {
            BlasKernelChoice(loaded: loaded, inUse: inUse, how: how, reason: reason, cpu: cpu.description,
                             cpuLevel: cpu.level.label)
        }
        if let user = userCoretype, !user.isEmpty {
            return (choice(loaded, .userSet, "OPENBLAS_CORETYPE=\(user) set by the user; kernels \(loaded)"), nil)
        }
        guard cpu.vendor != "", let loadedLevel = level(ofKernelSet: loaded) else {
            return (choice(loaded, .notX86, "kernels \(loaded), chosen by OpenBLAS"), nil)
        }
        let detected = "detected \(loaded) on an \(cpu.level.label) CPU"
        if loadedLevel >= cpu.level {
            return (choice(loaded, .libraryChoice, "kernels \(loaded), OpenBLAS's choice for this \(cpu.level.label) CPU"), nil)
        }
        guard canSwitch else {
            return (choice(loaded, .fixed, "\(detected); this OpenBLAS has a single kernel set (no DYNAMIC_ARCH): "
                + "install a build that knows the CPU for full speed"), nil)
        }
        if let r = remembered, switchTo(r).lowercased() == r.lowercased() {
            return (choice(r, .remembered, "\(detected); using \(r), verified on an earlier start"), nil)
        }
        var rejected: [String] = []
        for name in candidates(for: cpu) {
            let now = switchTo(name)
            guard now.lowercased() == name.lowercased() else { rejected.append("\(name): not in this OpenBLAS"); continue }
            if verify() { return (choice(now, .switched, "\(detected); using \(now), verified"), now) }
            rejected.append("\(name): wrong results")
        }
        let back = switchTo(loaded)
        return (choice(back, .noBetterSet, "\(detected); no better set passed verification ("
            + rejected.joined(separator: ", ") + "), keeping \(back)"), nil)
    }

    // MARK: Verification

    /// Whether the loaded kernels compute small products correctly: four transpose combinations of odd
    /// shapes and one product large enough for OpenBLAS to use its threads, against a Double reference.
    /// A kernel that does not fit the CPU gives garbage or NaN, far outside the 1e-4 relative tolerance
    /// (float32 rounding over K ≤ 256 terms stays below 1e-5 of Σ|a||b|). About 6M multiply-adds.
    public static func productsAgree() -> Bool { productsAgree(using: Blas.gemm) }

    /// The signature of `Blas.gemm`, so that tests can hand `productsAgree` a product that is wrong.
    public typealias Gemm = (_ transA: Bool, _ transB: Bool, _ M: Int, _ N: Int, _ K: Int, _ alpha: Float,
                             _ A: UnsafePointer<Float>, _ lda: Int, _ B: UnsafePointer<Float>, _ ldb: Int,
                             _ beta: Float, _ C: UnsafeMutablePointer<Float>, _ ldc: Int) -> Void

    static func productsAgree(using gemm: Gemm) -> Bool {
        let shapes: [(Int, Int, Int, Bool, Bool)] = [(67, 131, 96, false, false), (64, 72, 256, true, false),
                                                      (80, 64, 200, false, true), (33, 65, 129, true, true),
                                                      (128, 128, 160, false, false)]
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Float {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: seed >> 11) % 2001 - 1000) / 1000
        }
        for (M, N, K, tA, tB) in shapes {
            let a = (0 ..< M * K).map { _ in next() }, b = (0 ..< K * N).map { _ in next() }
            var c = [Float](repeating: .nan, count: M * N)
            a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in c.withUnsafeMutableBufferPointer { pc in
                gemm(tA, tB, M, N, K, 1, pa.baseAddress!, tA ? M : K, pb.baseAddress!, tB ? K : N, 0, pc.baseAddress!, N)
            } } }
            let ok = a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in c.withUnsafeBufferPointer { c in
                for i in 0 ..< M {
                    for j in 0 ..< N {
                        var sum = 0.0, scale = 0.0
                        for p in 0 ..< K {
                            let x = Double(tA ? a[p * M + i] : a[i * K + p]), y = Double(tB ? b[j * K + p] : b[p * N + j])
                            sum += x * y
                            scale += abs(x * y)
                        }
                        if !(abs(Double(c[i * N + j]) - sum) <= 1e-4 * scale + 1e-6) { return false }
                    }
                }
                return true
            } } }
            if !ok { return false }
        }
        return true
    }

    // MARK: Memory of verified choices

    /// `MOE_DIST_BLAS_CACHE`, else `$XDG_CACHE_HOME/moe-dist/blas-kernels.json`, else `~/.cache/...`.
    public static func cachePath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let p = environment["MOE_DIST_BLAS_CACHE"], !p.isEmpty { return p }
        let base = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (environment["HOME"] ?? NSHomeDirectory()) + "/.cache"
        return base + "/moe-dist/blas-kernels.json"
    }

    /// The key of a verified choice: the CPU model and the OpenBLAS build (its configuration string at load).
    static func cacheKey(cpu: CPUFeatures, library: String) -> String { "\(cpu.signature) | \(library)" }

    static func readCache(_ path: String) -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path),
              let table = try? JSONDecoder().decode([String: String].self, from: data) else { return [:] }
        return table
    }

    /// Adds one entry; best effort (a read-only home only costs the next start a verification). Written to a
    /// temporary name and renamed, so ranks starting together never leave a torn file.
    static func remember(_ name: String, key: String, path: String) {
        var table = readCache(path)
        table[key] = name
        let dir = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? enc.encode(table) else { return }
        let tmp = path + ".tmp.\(getpid())"
        if FileManager.default.createFile(atPath: tmp, contents: data), rename(tmp, path) != 0 { unlink(tmp) }
    }

    // MARK: At start

    nonisolated(unsafe) private static var made: BlasKernelChoice?
    private static let lock = NSLock()

    /// The choice made at start (makes it on first use). Call before any product and before MPI_Init.
    /// `MOE_DIST_BLAS_PRETEND_LOADED=<set>` first loads that set as if OpenBLAS had picked it (to reproduce
    /// an unknown-CPU start on a machine whose OpenBLAS knows its CPU; for tests).
    @discardableResult
    public static func atStart(environment: [String: String] = ProcessInfo.processInfo.environment) -> BlasKernelChoice {
        lock.lock()
        defer { lock.unlock() }
        if let c = made { return c }
        let cpu = CPUFeatures.current
        if let pretend = environment["MOE_DIST_BLAS_PRETEND_LOADED"], !pretend.isEmpty, Blas.canSwitchKernels {
            Blas.switchKernels(to: pretend)
        }
        let key = cacheKey(cpu: cpu, library: Blas.libraryConfig)
        let path = cachePath(environment: environment)
        let (choice, verified) = decide(
            cpu: cpu, loaded: Blas.coreName, userCoretype: environment["OPENBLAS_CORETYPE"],
            remembered: readCache(path)[key], canSwitch: Blas.canSwitchKernels,
            switchTo: { Blas.switchKernels(to: $0) }, verify: productsAgree)
        if let v = verified { remember(v, key: key, path: path) }
        made = choice
        return choice
    }

    /// The choice made at start, or nil if `atStart` has not run (e.g. inside unit tests).
    public static var current: BlasKernelChoice? {
        lock.lock()
        defer { lock.unlock() }
        return made
    }
}
