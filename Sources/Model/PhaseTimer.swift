// Wall-clock time per phase of a training step, for the benchmark's time split
// and the communication share. A monotonic clock read costs ~20 ns, so the
// timer stays on.
import Foundation
import Collectives

public enum Phase: String, CaseIterable, Sendable {
    case attention          // norms, QKV/output projections, rotary, attention
    case experts            // expert (or dense) FFN GEMMs and activations
    case routerDispatch     // router, top-k, statistics, capacity, gather/scatter of rows
    case allToAll           // token exchanges of the MoE layer (communication)
    case allReduce          // routing-statistics and gradient reductions (communication)
    case head               // embedding, final norm, logits, cross-entropy
    case optimizer          // clipping and AdamW
    case rankWait           // waiting for a slower rank before a collective (only with `separatesWaits`)
}

public final class PhaseTimer {
    private var seconds = [Double](repeating: 0, count: Phase.allCases.count)
    private let index: [Phase: Int] = Dictionary(uniqueKeysWithValues: Phase.allCases.enumerated().map { ($1, $0) })
    /// When set (by the benchmark), `collective` separates the time a rank waits for the others
    /// before a collective from the collective itself, so the communication share is the exchange alone.
    public var separatesWaits = false
    public init() {}

    @inline(__always) public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Adds the time since `start` to `phase` and returns the current time (to chain phases).
    @discardableResult @inline(__always)
    public func add(_ phase: Phase, since start: Double) -> Double {
        let t = PhaseTimer.now()
        seconds[index[phase]!] += t - start
        return t
    }

    /// Runs `body`, charging its time to `phase`.
    @inline(__always)
    public func measure<R>(_ phase: Phase, _ body: () throws -> R) rethrows -> R {
        let t = PhaseTimer.now()
        defer { add(phase, since: t) }
        return try body()
    }

    /// Seconds charged so far to `phase`.
    public func charged(_ phase: Phase) -> Double { seconds[index[phase]!] }

    public func totals() -> [Phase: Double] {
        Dictionary(uniqueKeysWithValues: Phase.allCases.map { ($0, seconds[index[$0]!]) })
    }
    public func reset() { for i in seconds.indices { seconds[i] = 0 } }
}

extension PhaseTimer {
    /// Seconds charged so far to `phases`, summed (an index loop: no iterator to allocate in debug builds).
    public func charged(_ phases: [Phase]) -> Double {
        var s = 0.0
        for i in 0 ..< phases.count { s += charged(phases[i]) }
        return s
    }
}

extension PhaseTimer {
    /// Runs `body`, a collective over `comm`, charging its time to `phase`. With `separatesWaits`, a barrier
    /// of `comm` comes first, charged to `.rankWait`, so `phase` holds the transfer alone (every rank of
    /// `comm` reaches this point together, as it must for the collective itself).
    @inline(__always)
    public func collective<R>(_ phase: Phase, over comm: Communicator, _ body: () throws -> R) rethrows -> R {
        if separatesWaits && comm.size > 1 {
            let t = PhaseTimer.now()
            comm.barrier()
            add(.rankWait, since: t)
        }
        return try measure(phase, body)
    }
}
