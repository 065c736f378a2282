// The dispatcher's row loops on the rank's threads (a one-rank expert group, the direct path): gathers and
// the gates' gradient split the rows, combine and dispatchBackward split the tokens and add each token's
// rows in row order. Every output must equal the one-thread output bit for bit, and combine and
// dispatchBackward must equal a naive loop over the rows (the order one thread has always added them in),
// on a routing with dropped assignments, tokens with no kept assignment, and top-3 (so a token's rows are
// not simply its two slots).
import XCTest
import Collectives
import Kernels
import TestSupport
@testable import Model

final class DispatcherThreadsTests: XCTestCase {
    let E = 7, k = 3, N = 300, d = 384   // N·d ≥ 3·32768: every loop splits in three
    /// The plan's weights (the dispatcher reads none).
    private static let placeholder = UnsafeMutablePointer<Float>.allocate(capacity: 64)

    private struct Outputs: Equatable {
        var x: [Float], out: [Float], dy: [Float], dg: [Float], du: [Float]
    }

    private func run(threads: Int, selected: [Int32], keep: [Int32], u: [Float], y: [Float], gates: [Float],
                     dout: [Float], dx: [Float], du0: [Float]) -> (Outputs, DispatchState) {
        let saved = Blas.configuredThreads
        Blas.numThreads = threads
        defer { Blas.numThreads = saved }
        let ctx = ParallelContext.single(numExperts: E)
        XCTAssertEqual(ctx.blasWorkers, threads)
        let dispatcher = TokenDispatcher(ctx: ctx, width: d, experts: E, topK: k)
        let s = DispatchState(experts: E, groupSize: 1)
        dispatcher.countRows(s, selected: selected, keep: keep, N: N)
        let slots = ExpertSlots(experts: E, dModel: 1, dFF: 1, ctx: ctx)
        slots.placeOnOwners(weights: PoolTensors(routers: [], w1: Self.placeholder, w3: nil, w2: Self.placeholder))
        dispatcher.plan(s, slots, selected: selected, keep: keep)
        var x = [Float](repeating: .nan, count: s.recvRows * d)
        dispatcher.dispatch(s, tokens: u, into: &x)
        dispatcher.expertOutputs(s).update(from: y, count: s.recvRows * d)
        var out = [Float](repeating: .nan, count: N * d)
        dispatcher.combine(s, gates: gates, into: &out, N: N)
        var dy = [Float](repeating: .nan, count: s.recvRows * d), dg = [Float](repeating: .nan, count: N * k)
        dispatcher.combineBackward(s, dOut: dout, gates: gates, dGates: &dg, dExpertOutputs: &dy, N: N)
        var du = du0, dxCopy = dx
        dispatcher.dispatchBackward(s, dExpertInputs: &dxCopy, into: &du)
        return (Outputs(x: x, out: out, dy: dy, dg: dg, du: du), s)
    }

    func testThreadsGiveTheSameBitsAndTheRowOrderSums() {
        var rng = SplitMix64(seed: 41)
        var selected: [Int32] = [], keep: [Int32] = []
        for t in 0 ..< N {
            let first = Int(rng.next() % UInt64(E))
            for j in 0 ..< k { selected.append(Int32((first + 2 * j) % E)) }                  // distinct experts
            for _ in 0 ..< k { keep.append(t % 11 == 0 || rng.next() % 4 == 0 ? 0 : 1) }     // some tokens lose all
        }
        let kept = keep.filter { $0 != 0 }.count
        func floats(_ n: Int) -> [Float] { (0 ..< n).map { _ in Float(Int(rng.next() % 2001) - 1000) / 337 } }
        let u = floats(N * d), y = floats(kept * d), gates = floats(N * k), dout = floats(N * d)
        let dx = floats(kept * d), du0 = floats(N * d)
        XCTAssertEqual(Blas.rowWorkers(3, rows: N, width: d), 3)

        let (one, s) = run(threads: 1, selected: selected, keep: keep, u: u, y: y, gates: gates, dout: dout, dx: dx, du0: du0)
        let (three, _) = run(threads: 3, selected: selected, keep: keep, u: u, y: y, gates: gates, dout: dout, dx: dx, du0: du0)
        for (name, a, b) in [("dispatch", one.x, three.x), ("combine", one.out, three.out), ("dy", one.dy, three.dy),
                             ("dgates", one.dg, three.dg), ("dispatchBackward", one.du, three.du)] {
            XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "\(name): 1 and 3 threads differ")
        }

        // The naive loops over rows, in row order, as the dispatcher computed them before it had threads.
        let rowOf = Array(UnsafeBufferPointer(start: s.rowAssignment.pointer, count: kept))
        var out = [Float](repeating: 0, count: N * d), du = du0
        for row in 0 ..< kept {
            let a = Int(rowOf[row]), t = a / k
            for i in 0 ..< d {
                out[t * d + i] += gates[a] * y[row * d + i]
                du[t * d + i] += dx[row * d + i]
            }
        }
        XCTAssertEqual(one.out.map(\.bitPattern), out.map(\.bitPattern), "combine vs the row-order loop")
        XCTAssertEqual(one.du.map(\.bitPattern), du.map(\.bitPattern), "dispatchBackward vs the row-order loop")
        for row in 0 ..< kept {
            let a = Int(rowOf[row]), t = a / k
            var dot = 0.0
            for i in 0 ..< d { dot += Double(dout[t * d + i]) * Double(y[row * d + i]) }
            XCTAssertEqual(Double(one.dg[a]), dot, accuracy: 1e-4 * max(1, abs(dot)), "dgates[\(a)]")
        }
        XCTAssertTrue(zip(keep, one.dg).allSatisfy { $0 != 0 || $1 == 0 }, "a dropped assignment's gate gradient is 0")
    }
}
