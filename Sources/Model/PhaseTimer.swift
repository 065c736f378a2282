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
    /// When set (by the benchmark), `waitForSlowerRanks` separates the time a rank waits for the others
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

    /// Charges `seconds` to `to` instead of `from` (for work inside a span the caller times as `from`; it
    /// may be charged before the span ends: `from` goes negative until then).
    public func moveCharge(of seconds: Double, from: Phase, to: Phase) {
        self.seconds[index[from]!] -= seconds
        self.seconds[index[to]!] += seconds
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
    /// With `separatesWaits`, a barrier of `comm` charged to `.rankWait` (collective: every rank of `comm`
    /// calls it at the same point, just before the collective it separates); otherwise nothing.
    @inline(__always)
    public func waitForSlowerRanks(_ comm: Communicator) {
        guard separatesWaits, comm.size > 1 else { return }
        let t = PhaseTimer.now()
        comm.barrier()
        add(.rankWait, since: t)
    }
}
