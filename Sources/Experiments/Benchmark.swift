// Throughput benchmark: the machine's sgemm peak measured in this process, then N training steps of a
// configuration, reported as tokens/s, model FLOPs utilisation (MFU), a per-phase time split and peak
// memory against the analytic estimate. Every rank runs it together; the result is the same on every rank.
//
//   peak    GFLOP/s of cblas_sgemm: the best over square sizes of the median of several calls, measured on
//           every rank at the same time with the rank's BLAS threads (and once with 1 thread); machine peak =
//           Σ over ranks (with ranks × threads = cores, the node's peak under the contention training sees).
//           Measured for the kernel set in use and for every set this OpenBLAS offers for the CPU's vector
//           extensions (each checked for correct results first); the best of those is the reference.
//   MFU     flops_per_token · tokens/s (all ranks) / best machine peak (also reported against the set in use)
//   split   seconds per phase summed over the measured steps, on rank 0 ("other" = step time − Σ phases);
//           communication share = max over ranks of (all-to-all + all-reduce) / step time
//   memory  VmHWM of /proc/self/status, max over ranks, against MemoryEstimate plus the process's resident
//           size before the model was built (libraries, MPI, corpus)
import Foundation
import Training
import Configuration
import Collectives
import Kernels
import Model

public struct SgemmPeak: Codable, Sendable {
    /// Square sizes tried (M = N = K).
    public var sizes: [Int]
    /// GFLOP/s of the best call per size, 1 BLAS thread.
    public var singleThreadBySize: [Double]
    /// GFLOP/s of the best call per size, `threads` BLAS threads.
    public var allThreadBySize: [Double]
    public var singleThread: Double
    public var allThread: Double
    public var threads: Int
    /// GFLOP/s per size of `threads` single-thread products at once (summed), as the trainer runs experts
    /// and attention heads; 0 with one thread. On some machines this beats OpenBLAS's threading of one product.
    public var concurrentSingleThreadBySize: [Double]
    public var concurrentSingleThread: Double
    /// The rank's peak: the better of `allThread` and `concurrentSingleThread`.
    public var rankPeak: Double { max(allThread, concurrentSingleThread) }
}

/// The sgemm peak of one OpenBLAS kernel set: rank 0's, and summed over the ranks.
public struct KernelSetPeak: Codable, Sendable {
    public var name: String
    public var rankGflops: Double
    public var machineGflops: Double
}

public struct BenchmarkReport: Codable, Sendable {
    public var config: String
    public var worldSize: Int
    public var blasThreadsPerRank: Int
    public var cores: Int
    public var blasCoreName: String
    /// OPENBLAS_CORETYPE when set (it forces the kernel set).
    public var openblasCoretype: String?
    /// Why this kernel set runs (BlasKernelSelection), the set OpenBLAS loaded by itself, and the CPU.
    public var blasKernelReason: String
    public var blasLoadedCoreName: String
    public var cpu: String
    /// The build of the element-wise kernels (activations, AdamW, softmax exponentials) this CPU runs.
    public var vectorKernels: String
    /// What runs the experts' forward and input-gradient products (PackedMatmul or OpenBLAS).
    public var expertProducts: String
    /// Every kernel set measured (the one in use first) and the fastest of them: MFU's reference.
    public var kernelSetPeaks: [KernelSetPeak]
    public var bestKernelSet: String
    public var bestMachinePeakGflops: Double
    public var corpus: String
    public var microBatch: Int
    public var globalBatch: Int
    public var warmupSteps: Int
    public var steps: Int
    /// Rank 0's peak (single- and all-thread) and the machine peak Σ_ranks all-thread.
    public var sgemm: SgemmPeak
    public var machinePeakGflops: Double
    public var peakDefinition: String
    public var tokensPerStep: Int
    public var stepTimeSeconds: Double
    public var stepTimeMin: Double
    public var tokensPerSecond: Double
    public var flopsPerToken: Double
    public var flopsPerTokenFormula: String
    public var modelGflops: Double
    /// Against the best kernel set's machine peak; `mfuInUse` against the set that ran.
    public var mfu: Double
    public var mfuInUse: Double
    public var mfuDefinition: String
    /// Seconds per step by phase (rank 0, mean over measured steps), and the same as fractions of the step.
    public var timeSplitSeconds: [String: Double]
    public var timeSplitFraction: [String: Double]
    public var timeSplitSource: String
    public var communicationFraction: Double
    /// Median over the measured steps of each step's all-to-all and all-reduce seconds (keys "all_to_all",
    /// "all_reduce"; each step's figure is the slowest rank's): robust to the odd step slowed by other work.
    public var communicationMedianSeconds: [String: Double]
    public var communicationDefinition: String
    /// Time a rank waits for slower ranks before the collectives (expert-load or other imbalance), max over ranks.
    public var rankWaitFraction: Double
    public var rankWaitDefinition: String
    /// Expert lending in the measured steps (rank 0's expert group; `parallel.balance_experts`): whether it
    /// can happen (on, and more than one rank per group), the MoE uses that lent, experts lent per use, and the
    /// share of expert rows a helper ran instead of the owner.
    public var expertLending: Bool
    public var lendingUses: Int
    public var lendingUsesWithLoans: Int
    public var loansPerUse: Double
    public var rowsLentFraction: Double
    public var peakResidentBytes: Int
    public var baselineResidentBytes: Int
    public var estimate: MemoryEstimate
    public var estimatedTotalBytes: Int
    public var peakOverEstimate: Double
    public var peakMinusBaselineOverEstimate: Double
    public var memoryDefinition: String
    public var finalLoss: Double
    /// MFU at the fastest measured step (max over ranks of each rank's fastest step): less sensitive to other
    /// processes sharing the cores than the mean.
    public var mfuBestStep: Double
    /// Process CPU seconds (all threads) per measured step, max over ranks; with ranks × threads = cores and
    /// an idle machine this is close to threads × step time.
    public var cpuSecondsPerStep: Double
    /// /proc/loadavg (1, 5, 15 minutes) at the start and at the end of the benchmark.
    public var loadAverageStart: [Double]
    public var loadAverageEnd: [Double]
}

public enum Benchmark {
    /// GFLOP/s of the median of `repeats` calls of an n×n×n sgemm with the current BLAS threads (the median,
    /// not the best: one lucky call on a shared machine would inflate the peak and so deflate nothing else).
    /// With `world`, every call starts on all ranks together (a barrier before each), so that each rank's
    /// figure is what it reaches while the others compute too, as in training; otherwise a rank that runs
    /// ahead measures alone on an idle machine and the summed peak counts cores twice.
    public static func sgemmGFLOPs(n: Int, repeats: Int, world: Communicator? = nil) -> Double {
        let a = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        let b = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        let c = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        defer { a.deallocate(); b.deallocate(); c.deallocate() }
        for i in 0 ..< n * n { a[i] = Float(i % 7) * 0.01; b[i] = Float(i % 5) * 0.01; c[i] = 0 }
        var times: [Double] = []
        for call in 0 ..< repeats + 1 {     // the first call warms caches and BLAS threads
            world?.barrier()
            let t = PhaseTimer.now()
            Blas.gemm(transA: false, transB: false, M: n, N: n, K: n, alpha: 1, A: a, lda: n, B: b, ldb: n,
                      beta: 0, C: c, ldc: n)
            if call > 0 { times.append(PhaseTimer.now() - t) }
        }
        times.sort()
        return 2 * Double(n * n * n) / times[times.count / 2] / 1e9
    }

    /// GFLOP/s of `workers` single-thread n³ sgemms run at once on this rank (each worker's median of
    /// `repeats` calls, summed); 0 when workers <= 1. With `world`, all ranks start together.
    public static func concurrentSingleThreadGFLOPs(n: Int, repeats: Int, workers: Int, world: Communicator? = nil) -> Double {
        guard workers > 1 else { return 0 }
        var rates = [Double](repeating: 0, count: workers)
        world?.barrier()
        rates.withUnsafeMutableBufferPointer { r in
            Blas.parallel(workers: workers) { w in r[w] = sgemmGFLOPs(n: n, repeats: repeats) }
        }
        return rates.reduce(0, +)
    }

    /// Single-thread, `threads`-thread (OpenBLAS's own threading) and `threads` concurrent single-thread
    /// peaks over square sizes (with `world`, measured on all ranks at once); leaves OpenBLAS at one thread.
    public static func sgemmPeak(threads: Int, sizes: [Int] = defaultPeakSizes, repeats: Int = 5,
                                 world: Communicator? = nil) -> SgemmPeak {
        Blas.libraryThreads = 1
        let single = sizes.map { sgemmGFLOPs(n: $0, repeats: repeats, world: world) }
        Blas.libraryThreads = threads
        defer { Blas.libraryThreads = 1 }
        let all = threads == 1 ? single : sizes.map { sgemmGFLOPs(n: $0, repeats: repeats, world: world) }
        let concurrent = sizes.map { concurrentSingleThreadGFLOPs(n: $0, repeats: repeats, workers: threads, world: world) }
        return SgemmPeak(sizes: sizes, singleThreadBySize: single, allThreadBySize: all,
                         singleThread: single.max() ?? 0, allThread: all.max() ?? 0, threads: threads,
                         concurrentSingleThreadBySize: concurrent, concurrentSingleThread: concurrent.max() ?? 0)
    }

    public static let defaultPeakSizes = [512, 1024, 1536]

    /// The rank peak (the better of all-thread and concurrent single-thread products) of every kernel set this OpenBLAS offers for the CPU (and of the set in use), on
    /// every rank at once (collective: every rank tries the same sets in the same order). A set that is not in
    /// the library or computes wrong results is left out. Leaves the set in use loaded.
    static func kernelSetPeaks(inUse: String, threads: Int, world: Communicator) -> [KernelSetPeak] {
        var names = [inUse]
        if Blas.canSwitchKernels {
            for n in BlasKernelSelection.candidates(for: .current) where n.lowercased() != inUse.lowercased() { names.append(n) }
        }
        var peaks: [KernelSetPeak] = []
        Blas.libraryThreads = threads
        defer { Blas.libraryThreads = 1 }
        for name in names {
            let loaded = name == inUse ? Blas.coreName : Blas.switchKernels(to: name)
            let usable = world.anyRank(loaded.lowercased() == name.lowercased() && BlasKernelSelection.productsAgree())
            // The same verdict on every rank: the ranks share one CPU model, so they agree (were they ever to
            // differ, a set that any rank accepts would be measured).
            guard usable else { continue }
            let rank = defaultPeakSizes.map {
                max(sgemmGFLOPs(n: $0, repeats: 5, world: world),
                    concurrentSingleThreadGFLOPs(n: $0, repeats: 5, workers: threads, world: world))
            }.max() ?? 0
            var sum = [rank]
            sum.withUnsafeMutableBufferPointer { world.allReduceSum($0) }
            peaks.append(KernelSetPeak(name: name, rankGflops: rank, machineGflops: sum[0]))
        }
        if Blas.coreName.lowercased() != inUse.lowercased() { Blas.switchKernels(to: inUse) }
        return peaks
    }

    /// A field of /proc/self/status in bytes (e.g. "VmHWM", "VmRSS"); 0 where unavailable.
    public static func procStatusBytes(_ field: String) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix(field + ":") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return 0
    }

    /// The 1, 5 and 15 minute load averages of /proc/loadavg (empty where unavailable).
    public static func loadAverage() -> [Double] {
        guard let s = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8) else { return [] }
        return s.split(separator: " ").prefix(3).compactMap { Double($0) }
    }

    /// CPU seconds used by this process so far (all threads).
    public static func processCPUSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Runs the benchmark on every rank of `ctx.world` (collective). `data` must be the configuration's data.
    public static func run(config: RunConfig, configPath: String, ctx: ParallelContext, data: TrainingData,
                           warmup: Int, steps: Int) throws -> BenchmarkReport {
        let world = ctx.world
        let loadStart = loadAverage()
        let threads = Blas.numThreads
        world.barrier()
        let peaks = measurePeaks(threads: threads, world: world)
        let baseline = procStatusBytes("VmRSS")
        var c = config
        c.train.maxSteps = warmup + steps          // the schedule spans the benchmark
        c.train.maxTokens = nil
        let trainer = try Trainer(config: c, ctx: ctx, train: data.train)
        let measured = measureSteps(trainer, ctx: ctx, warmup: warmup, steps: steps)
        return report(config: c, configPath: configPath, ctx: ctx, data: data, warmup: warmup, steps: steps,
                      threads: threads, peaks: peaks, measured: measured, baseline: baseline, loadStart: loadStart)
    }

    /// The sgemm peaks: this process's kernel set, and every set this OpenBLAS offers (the best is the reference).
    struct Peaks {
        var sgemm: SgemmPeak
        var machinePeak: Double
        var choice: BlasKernelChoice?
        var inUse: String
        var setPeaks: [KernelSetPeak]
        var bestPeak: Double
        var bestName: String
    }

    static func measurePeaks(threads: Int, world: Communicator) -> Peaks {
        let peak = sgemmPeak(threads: threads, world: world)
        var sums = [peak.rankPeak]
        sums.withUnsafeMutableBufferPointer { world.allReduceSum($0) }
        let machinePeak = sums[0]
        let choice = BlasKernelSelection.current
        let inUse = Blas.coreName
        let setPeaks = kernelSetPeaks(inUse: inUse, threads: threads, world: world)
        let best = setPeaks.max { $0.machineGflops < $1.machineGflops }
        // The reference is the best set measured, and never below the set in use's own measurement.
        let bestPeak = max(best?.machineGflops ?? 0, machinePeak)
        let bestName = (best?.machineGflops ?? 0) >= machinePeak ? (best?.name ?? inUse) : inUse
        return Peaks(sgemm: peak, machinePeak: machinePeak, choice: choice, inUse: inUse, setPeaks: setPeaks,
                     bestPeak: bestPeak, bestName: bestName)
    }

    /// The measured steps, agreed over the ranks (the same on every rank).
    struct StepMeasurements {
        var finalLoss: Double
        /// Max over ranks: summed step time, fastest step, VmHWM, summed collective time, CPU seconds per step.
        var slowestTotal: Double, fastestStep: Double, peakResident: Double, cpuPerStep: Double
        var communicationFraction: Double, rankWaitFraction: Double
        var communicationMedians: [String: Double]
        var splitSeconds: [String: Double], splitFraction: [String: Double]
        var lendingUses: Int, lendingUsesWithLoans: Int, loansPerUse: Double, rowsLentFraction: Double
    }

    /// `warmup` steps, then `steps` timed steps with the phase timer separating waits for slower ranks.
    static func measureSteps(_ trainer: Trainer, ctx: ParallelContext, warmup: Int, steps: Int) -> StepMeasurements {
        let world = ctx.world
        ctx.timer.separatesWaits = true
        defer { ctx.timer.separatesWaits = false }
        var finalLoss = 0.0
        for _ in 0 ..< warmup { finalLoss = trainer.trainStep().loss }
        var phaseSums = [Phase: Double]()
        var times: [Double] = []
        var commBySteps = [Double](repeating: 0, count: 2 * steps)    // all-to-all, all-reduce of each step
        let lending = ctx.lendingCounter
        let lendingStart = (lending.uses, lending.usesWithLoans, lending.loans, lending.rowsLent, lending.rows)
        world.barrier()
        let cpuStart = processCPUSeconds()
        for i in 0 ..< steps {
            let last = trainer.trainStep()
            finalLoss = last.loss
            times.append(last.stepTime)
            for (p, s) in last.timing { phaseSums[p, default: 0] += s }
            commBySteps[2 * i] = last.timing[.allToAll] ?? 0
            commBySteps[2 * i + 1] = last.timing[.allReduce] ?? 0
        }
        commBySteps.withUnsafeMutableBufferPointer { world.allReduceMax($0) }
        let commMedians = ["all_to_all": median((0 ..< steps).map { commBySteps[2 * $0] }),
                           "all_reduce": median((0 ..< steps).map { commBySteps[2 * $0 + 1] })]
        let cpuPerStep = (processCPUSeconds() - cpuStart) / Double(max(steps, 1))
        let lendingUses = lending.uses - lendingStart.0, lendingRows = lending.rows - lendingStart.4
        let measured = max(steps, 1)
        let total = times.reduce(0, +)
        // Step time: the slowest rank decides (max over ranks of the summed step times).
        var agg = [total, times.min() ?? 0, Double(procStatusBytes("VmHWM")),
                   (phaseSums[.allToAll] ?? 0) + (phaseSums[.allReduce] ?? 0), cpuPerStep]
        var commShare = [total > 0 ? agg[3] / total : 0, total > 0 ? (phaseSums[.rankWait] ?? 0) / total : 0]
        agg.withUnsafeMutableBufferPointer { world.allReduceMax($0) }
        commShare.withUnsafeMutableBufferPointer { world.allReduceMax($0) }
        let split = rank0Split(phaseSums, total: total, measured: measured, world: world)
        return StepMeasurements(
            finalLoss: finalLoss, slowestTotal: agg[0], fastestStep: agg[1], peakResident: agg[2], cpuPerStep: agg[4],
            communicationFraction: commShare[0], rankWaitFraction: commShare[1], communicationMedians: commMedians,
            splitSeconds: split.seconds, splitFraction: split.fraction,
            lendingUses: lendingUses, lendingUsesWithLoans: lending.usesWithLoans - lendingStart.1,
            loansPerUse: lendingUses > 0 ? Double(lending.loans - lendingStart.2) / Double(lendingUses) : 0,
            rowsLentFraction: lendingRows > 0 ? Double(lending.rowsLent - lendingStart.3) / Double(lendingRows) : 0)
    }

    static func median(_ x: [Double]) -> Double {
        let s = x.sorted()
        return s.isEmpty ? 0 : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Rank 0's phase split (seconds per measured step, and fractions of its step), shared so every rank
    /// returns the same report.
    static func rank0Split(_ phaseSums: [Phase: Double], total: Double, measured: Int,
                           world: Communicator) -> (seconds: [String: Double], fraction: [String: Double]) {
        var split = Phase.allCases.map { (phaseSums[$0] ?? 0) / Double(measured) }
        if world.rank != 0 { split = split.map { _ in 0 } }
        split.withUnsafeMutableBufferPointer { world.allReduceSum($0) }
        var rank0Step = [world.rank == 0 ? total / Double(measured) : 0]
        rank0Step.withUnsafeMutableBufferPointer { world.allReduceSum($0) }
        var splitSeconds: [String: Double] = [:]
        let names: [Phase: String] = [.attention: "attention", .experts: "experts", .routerDispatch: "router_dispatch",
                                      .allToAll: "all_to_all", .allReduce: "all_reduce", .head: "head",
                                      .optimizer: "optimizer", .rankWait: "rank_wait"]
        for (i, p) in Phase.allCases.enumerated() { splitSeconds[names[p]!] = split[i] }
        splitSeconds["other"] = max(0, rank0Step[0] - split.reduce(0, +))
        var splitFraction: [String: Double] = [:]
        for (k, v) in splitSeconds { splitFraction[k] = rank0Step[0] > 0 ? v / rank0Step[0] : 0 }
        return (splitSeconds, splitFraction)
    }

    /// The report of the measurements, with the definition of each figure.
    static func report(config c: RunConfig, configPath: String, ctx: ParallelContext, data: TrainingData,
                       warmup: Int, steps: Int, threads: Int, peaks p: Peaks, measured m: StepMeasurements,
                       baseline: Int, loadStart: [Double]) -> BenchmarkReport {
        let world = ctx.world
        let measured = max(steps, 1)
        let stepTime = m.slowestTotal / Double(measured)
        let tokensPerStep = c.train.globalBatch * c.model.seqLen
        let tps = stepTime > 0 ? Double(tokensPerStep) / stepTime : 0
        let cost = ModelCost(c)
        let achieved = cost.flopsPerToken * tps / 1e9
        let G = c.expertParallel(worldSize: world.size)
        let est = MemoryEstimate(c, expertParallel: G, microBatch: c.train.microBatch, packedExpertWeights: ctx.expertKernel)
        let peakRSS = Int(m.peakResident)
        return BenchmarkReport(
            config: configPath, worldSize: world.size, blasThreadsPerRank: threads,
            cores: ProcessInfo.processInfo.activeProcessorCount, blasCoreName: Blas.coreName,
            openblasCoretype: ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"],
            blasKernelReason: p.choice?.reason ?? "kernels \(p.inUse), chosen by OpenBLAS (no selection ran)",
            blasLoadedCoreName: p.choice?.loaded ?? p.inUse, cpu: CPUFeatures.current.description,
            vectorKernels: VectorKernels.level.description, expertProducts: ctx.expertProducts,
            kernelSetPeaks: p.setPeaks, bestKernelSet: p.bestName, bestMachinePeakGflops: p.bestPeak,
            corpus: data.summary, microBatch: c.train.microBatch, globalBatch: c.train.globalBatch,
            warmupSteps: warmup, steps: steps, sgemm: p.sgemm, machinePeakGflops: p.machinePeak,
            peakDefinition: "sum over ranks of each rank's n^3 sgemm GFLOP/s (max over n in sgemm.sizes of the median of "
                + "5 calls) at its own BLAS thread count, or of that many single-thread products at once if faster, "
                + "all ranks measuring at the same time (a barrier before every call); machine_peak_gflops for "
                + "the kernel set in use, best_machine_peak_gflops for the fastest set of kernel_set_peaks",
            tokensPerStep: tokensPerStep, stepTimeSeconds: stepTime, stepTimeMin: m.fastestStep,
            tokensPerSecond: tps, flopsPerToken: cost.flopsPerToken,
            flopsPerTokenFormula: "6*(R*(4*d^2 + d*E + k*m*d*F) + d*V) + 6*R*T*d, m = 2 (gelu) or 3 (swiglu); "
                + "dense: d*E + k*m*d*F -> m*d*F (training = forward + backward = 3x forward 2*params; causal attention QK^T and PV)",
            modelGflops: achieved, mfu: p.bestPeak > 0 ? achieved / p.bestPeak : 0,
            mfuInUse: p.machinePeak > 0 ? achieved / p.machinePeak : 0,
            mfuDefinition: "flops_per_token * tokens_per_second / best_machine_peak_gflops (mfu_in_use: / machine_peak_gflops); "
                + "tokens/s = global tokens per step / mean step time of the slowest rank",
            timeSplitSeconds: m.splitSeconds, timeSplitFraction: m.splitFraction,
            timeSplitSource: "rank 0, mean seconds per measured step (PhaseTimer); other = step time - sum of phases",
            communicationFraction: m.communicationFraction, communicationMedianSeconds: m.communicationMedians,
            communicationDefinition: "max over ranks of (all_to_all + all_reduce seconds) / step seconds: the collectives "
                + "themselves; the time a rank waits for slower ones before them is rank_wait",
            rankWaitFraction: m.rankWaitFraction,
            rankWaitDefinition: "max over ranks of rank_wait seconds / step seconds: a barrier before every token exchange "
                + "and reduction (benchmark only) separates waiting for slower ranks (expert-load imbalance, "
                + "uneven work) from the transfer",
            expertLending: ctx.expertLending.enabled && ctx.expertGroup.size > 1,
            lendingUses: m.lendingUses, lendingUsesWithLoans: m.lendingUsesWithLoans,
            loansPerUse: m.loansPerUse,
            rowsLentFraction: m.rowsLentFraction,
            peakResidentBytes: peakRSS, baselineResidentBytes: baseline, estimate: est,
            estimatedTotalBytes: est.totalBytes,
            peakOverEstimate: est.totalBytes > 0 ? Double(peakRSS) / Double(est.totalBytes) : 0,
            peakMinusBaselineOverEstimate: est.totalBytes > 0 ? Double(peakRSS - baseline) / Double(est.totalBytes) : 0,
            memoryDefinition: "peak = max over ranks of VmHWM (/proc/self/status); baseline = rank's VmRSS before the model "
                + "was built (runtime, MPI, BLAS, corpus); estimate = parameters + gradients + AdamW moments + saved "
                + "activations of one micro-batch + scratch (MemoryEstimate)",
            finalLoss: m.finalLoss,
            mfuBestStep: p.bestPeak > 0 && m.fastestStep > 0 ? cost.flopsPerToken * Double(tokensPerStep) / m.fastestStep / 1e9 / p.bestPeak : 0,
            cpuSecondsPerStep: m.cpuPerStep, loadAverageStart: loadStart, loadAverageEnd: loadAverage())
    }
}
