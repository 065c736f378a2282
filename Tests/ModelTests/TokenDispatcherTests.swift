// The token dispatcher at world sizes 1-4 in the in-process world, with expert groups of the whole world
// (the exchanging path) and of one rank (the direct path):
// - the rows each rank's experts receive, against an independent computation of who sends what to whom;
// - dispatch and combine as adjoints: ⟨dispatch(u), y⟩ = ⟨u, dispatchBackward(y)⟩ and
//   ⟨combine(y; g), v⟩ = ⟨y, combineBackward(v; g)⟩ over all ranks, and the gates' gradient
//   dgates[t·k+j] = v[t]·y_(t,j) against the rows dispatched to the experts (exact in Double; rtol 1e-5 in Float);
// - combine(dispatch(u)) with unit gates = u times the token's kept assignments (exact).
import XCTest
import Foundation
import Collectives
import TestSupport
@testable import Model

/// Failures collected from rank threads, asserted on the test thread.
final class RankFailures: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var messages: [String] = []
    func check(_ ok: Bool, _ m: @autoclosure () -> String) {
        if !ok { lock.lock(); messages.append(m()); lock.unlock() }
    }
}

final class TokenDispatcherTests: XCTestCase {
    let E = 7, k = 2, width = 3

    /// Rank r's tokens: rank 1 has none (a rank with no tokens is normal); selections pseudo-random and
    /// distinct per token; every fifth assignment dropped.
    struct Routing { var N: Int; var selected: [Int32]; var keep: [Int32]; var u: [Float] }
    func routing(rank r: Int) -> Routing {
        let N = r == 1 ? 0 : 4 + 2 * r
        var rng = SplitMix64(seed: UInt64(17 + r))
        var sel: [Int32] = [], keep: [Int32] = []
        for _ in 0 ..< N {
            let a = Int(rng.next() % UInt64(E)), b = (a + 1 + Int(rng.next() % UInt64(E - 1))) % E
            sel += [Int32(a), Int32(b)]
        }
        for _ in 0 ..< N * k { keep.append(rng.next() % 5 == 0 ? 0 : 1) }
        let u = (0 ..< N * width).map { i in Float(r * 100 + i) * 0.25 - 3 }
        return Routing(N: N, selected: sel, keep: keep, u: u)
    }

    /// With every expert on its owner, and with the plan of an eager lending policy (a loan costing nothing,
    /// up to 4 per use): then a rank also runs experts it does not own, and the expected rows follow the plan.
    func testDispatchCombineAdjointAndRoundTrip() throws {
        let eager = ExpertLendingPolicy(enabled: true, transferRows: 0, maxLoans: 4)
        for (W, G) in [(1, 1), (2, 2), (3, 3), (4, 4), (2, 1), (4, 2)] {
            for policy in [ExpertLendingPolicy.off, eager] {
                let failures = RankFailures()
                final class Loans: @unchecked Sendable { var count = 0 }
                let loans = Loans()
                try ThreadWorld.run(size: W) { comm in
                    let ctx = try ParallelContext.make(world: comm, expertParallel: G, numExperts: self.E)
                    let moved = self.checkRank(ctx, comm: comm, groupSize: G, policy: policy, failures: failures,
                                               label: "W=\(W) G=\(G) lending \(policy.enabled) rank \(comm.rank)")
                    if comm.rank == 0 { loans.count = moved }
                }
                XCTAssertEqual(failures.messages, [], "world size \(W), expert group \(G), lending \(policy.enabled)")
                if policy.enabled && G > 1 { XCTAssertGreaterThan(loans.count, 0, "W=\(W) G=\(G): nothing was lent") }
                if !policy.enabled { XCTAssertEqual(loans.count, 0) }
            }
        }
    }

    /// A plan running expert e on group rank runner[e] (weights: placeholders, the dispatcher reads none).
    private func plan(_ ctx: ParallelContext, runner: [Int]) -> ExpertSlots {
        let slots = ExpertSlots(experts: E, dModel: 1, dFF: 1, ctx: ctx)
        let pool = PoolTensors(routers: [], w1: Self.placeholder, w3: nil, w2: Self.placeholder)
        slots.placeOnOwners(weights: pool)
        slots.move(to: runner, guest: { _ in pool.expert(0, d: 1, F: 1) }, pool: pool)
        return slots
    }
    private static let placeholder = UnsafeMutablePointer<Float>.allocate(capacity: 64)

    /// Checks one rank; returns how many experts of the group the plan moved away from their owners.
    private func checkRank(_ ctx: ParallelContext, comm: Communicator, groupSize G: Int, policy: ExpertLendingPolicy,
                           failures: RankFailures, label: String) -> Int {
        let me = routing(rank: comm.rank), N = me.N, d = width
        let dispatcher = TokenDispatcher(ctx: ctx, width: d, experts: E, topK: k)
        let s = DispatchState(experts: E, groupSize: ctx.expertGroup.size)
        dispatcher.countRows(s, selected: me.selected, keep: me.keep, N: N)
        // Independent expectation: for each expert this rank runs (its own unless the plan moved it, and those
        // moved to it), every source of the group in rank order, its kept assignments to that expert in
        // (token, slot) order.
        let groupStart = comm.rank / G * G
        var rowsPerExpert = [Int](repeating: 0, count: E)
        for src in groupStart ..< groupStart + G {
            let o = routing(rank: src)
            for a in 0 ..< o.N * k where o.keep[a] != 0 { rowsPerExpert[Int(o.selected[a])] += 1 }
        }
        failures.check(dispatcher.expertRows == rowsPerExpert, "\(label): rows per expert \(dispatcher.expertRows) != \(rowsPerExpert)")
        var runner = [Int](repeating: 0, count: E)
        LendingPlanner(slices: ctx.expertSlices, experts: E).plan(rows: rowsPerExpert, policy: policy, into: &runner)
        let slots = plan(ctx, runner: runner)
        dispatcher.plan(s, slots, selected: me.selected, keep: me.keep)
        let mine = (0 ..< E).filter { runner[$0] == ctx.expertGroup.rank }
        failures.check(Array(slots.expert.prefix(slots.count)) == mine, "\(label): slots \(slots.expert.prefix(slots.count)) != \(mine)")
        failures.check(s.slots == mine.count, "\(label): the dispatcher's slots \(s.slots) != \(mine.count)")
        var expected: [Float] = []
        for e in mine {
            for src in groupStart ..< groupStart + G {
                let o = routing(rank: src)
                for a in 0 ..< o.N * k where o.keep[a] != 0 && Int(o.selected[a]) == e {
                    expected += o.u[(a / k) * d ..< (a / k + 1) * d]
                }
            }
        }
        var x = [Float](repeating: .nan, count: s.recvRows * d + 1)
        dispatcher.dispatch(s, tokens: me.u + [0], into: &x)
        failures.check(Array(x.dropLast()) == expected, "\(label): expert rows \(x.dropLast()) != \(expected)")

        // Round trip with unit gates: each token comes back once per kept assignment.
        let ones = [Float](repeating: 1, count: N * k + 1)
        writeExpertOutputs(dispatcher, s, Array(x.dropLast()))
        var out = [Float](repeating: .nan, count: N * d + 1)
        dispatcher.combine(s, gates: ones, into: &out, N: N)
        var roundTrip: [Float] = []
        for t in 0 ..< N {
            let kept = Float((0 ..< k).filter { me.keep[t * k + $0] != 0 }.count)
            roundTrip += me.u[t * d ..< (t + 1) * d].map { $0 * kept }
        }
        failures.check(Array(out.prefix(N * d)) == roundTrip, "\(label): combine(dispatch(u)) != u · kept")

        // Adjoints, with arbitrary y (expert side), v (token side) and gates.
        let y = (0 ..< s.recvRows * d).map { Float(($0 * 7 + comm.rank * 3) % 11) * 0.5 - 2 }
        let v = (0 ..< N * d).map { Float(($0 * 5 + comm.rank) % 13) * 0.25 - 1 }
        let gates = (0 ..< N * k).map { Float($0 % 3 + 1) * 0.3 }
        // ⟨dispatch(u), y⟩ vs ⟨u, dispatchBackward(y)⟩
        var du = [Float](repeating: 0, count: N * d + 1)
        var yv = y + [0]
        dispatcher.dispatchBackward(s, dExpertInputs: &yv, into: &du)
        // ⟨combine(y; g), v⟩ vs ⟨y, combineBackward(v; g)⟩
        writeExpertOutputs(dispatcher, s, y)
        dispatcher.combine(s, gates: gates + [0], into: &out, N: N)
        var dy = [Float](repeating: .nan, count: s.recvRows * d + 1), dg = [Float](repeating: .nan, count: N * k + 1)
        dispatcher.combineBackward(s, dOut: v + [0], gates: gates + [0], dGates: &dg, dExpertOutputs: &dy, N: N)
        var sums = [dot(Array(x.dropLast()), y), dot(me.u, Array(du.prefix(N * d))),
                    dot(Array(out.prefix(N * d)), v), dot(y, Array(dy.prefix(s.recvRows * d)))]
        sums.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
        failures.check(abs(sums[0] - sums[1]) <= 1e-9 * max(1, abs(sums[0])), "\(label): dispatch adjoint \(sums[0]) vs \(sums[1])")
        failures.check(abs(sums[2] - sums[3]) <= 1e-5 * max(1, abs(sums[2])), "\(label): combine adjoint \(sums[2]) vs \(sums[3])")
        // dgates[a] = v[t]·y_a, with y_a the output row of assignment a: ⟨combine(y; e_a), v⟩.
        checkGateGradient(dispatcher, s, me: me, y: y, v: v, dg: dg, failures: failures, label: label)
        return ctx.expertSlices.enumerated().reduce(0) { n, rs in n + rs.element.filter { runner[$0] != rs.offset }.count }
    }

    /// dgates against the combine's derivative in each gate: combine with only gate a set to 1.
    private func checkGateGradient(_ dispatcher: TokenDispatcher, _ s: DispatchState, me: Routing, y: [Float], v: [Float],
                                   dg: [Float], failures: RankFailures, label: String) {
        // Every rank takes part in every combine (collective), so all loop over the largest local N·k.
        var steps = [Double(me.N * k)]
        steps.withUnsafeMutableBufferPointer { dispatcher.ctx.world.allReduceMax($0) }
        var out = [Float](repeating: 0, count: me.N * width + 1)
        for a in 0 ..< Int(steps[0]) {
            var g = [Float](repeating: 0, count: me.N * k + 1)
            if a < me.N * k { g[a] = 1 }
            writeExpertOutputs(dispatcher, s, y)
            dispatcher.combine(s, gates: g, into: &out, N: me.N)
            guard a < me.N * k else { continue }
            let want = me.keep[a] == 0 ? 0 : dot(Array(out.prefix(me.N * width)), v)
            failures.check(abs(Double(dg[a]) - want) <= 1e-5 * max(1, abs(want)), "\(label): dgates[\(a)] \(dg[a]) vs \(want)")
        }
    }

    private func writeExpertOutputs(_ dispatcher: TokenDispatcher, _ s: DispatchState, _ y: [Float]) {
        let p = dispatcher.expertOutputs(s)
        for i in 0 ..< y.count { p[i] = y[i] }
    }

    private func dot(_ a: [Float], _ b: [Float]) -> Double {
        zip(a, b).reduce(0) { $0 + Double($1.0) * Double($1.1) }
    }
}
