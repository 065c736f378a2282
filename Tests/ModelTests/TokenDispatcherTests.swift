// Dispatch then combine returns the input exactly, and the gradient of that round
// trip (combine's backward is dispatch and vice versa) is the identity, at world
// sizes 1-4 in the in-process world. The rows each rank's experts receive are
// checked against an independent computation of who sends what to whom.
import XCTest
import Foundation
import Collectives
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
    let E = 7, width = 3

    /// Rows of rank r: rank 1 has none (a rank with no tokens is normal); expert ids pseudo-random.
    func rows(rank r: Int) -> [(expert: Int, values: [Float])] {
        let n = r == 1 ? 0 : 5 + 2 * r
        let list = (0 ..< n).map { i -> (Int, [Float]) in
            let e = (i * 5 + r * 3 + (i * i) % 4) % E
            return (e, [Float(r), Float(i), Float(e) + 0.25])
        }
        return list.sorted { $0.0 < $1.0 }   // the dispatcher takes rows sorted by expert (stable)
    }

    func testRoundTripAndGradientAtWorldSizes1To4() throws {
        for W in 1 ... 4 {
            let failures = RankFailures()
            try ThreadWorld.run(size: W) { comm in
                let ctx = try ParallelContext.make(world: comm, expertParallel: W, numExperts: self.E)
                let dispatcher = TokenDispatcher(ctx: ctx, width: self.width)
                let mine = self.rows(rank: comm.rank)
                var perExpert = [Int](repeating: 0, count: self.E)
                for r in mine { perExpert[r.expert] += 1 }
                // One spare element keeps every buffer non-empty (ranks with no rows are part of the test).
                let send = mine.flatMap(\.values) + [0]
                let n = send.count - 1
                let plan = dispatcher.plan(sendPerExpert: perExpert)

                // Independent expectation: for each local expert, every source's rows to it, sources in order.
                var expected: [Float] = []
                for e in ctx.localExperts {
                    for s in 0 ..< W { for r in self.rows(rank: s) where r.expert == e { expected += r.values } }
                }
                func dispatch(_ x: [Float]) -> [Float] {
                    var out = [Float](repeating: .nan, count: plan.recvRows * self.width + 1)
                    x.withUnsafeBufferPointer { xp in
                        out.withUnsafeMutableBufferPointer { dispatcher.dispatch(xp.baseAddress!, plan: plan, into: $0.baseAddress!) }
                    }
                    return out
                }
                func combine(_ y: [Float]) -> [Float] {
                    var out = [Float](repeating: .nan, count: n + 1)
                    y.withUnsafeBufferPointer { yp in
                        out.withUnsafeMutableBufferPointer { dispatcher.combine(yp.baseAddress!, plan: plan, into: $0.baseAddress!) }
                    }
                    return out
                }
                let received = dispatch(send)
                failures.check(Array(received.dropLast()) == expected,
                               "W=\(W) rank \(comm.rank): expert rows \(received.dropLast()) != \(expected)")
                let back = combine(received)
                failures.check(Array(back.prefix(n)) == Array(send.prefix(n)), "W=\(W) rank \(comm.rank): round trip differs")

                // Backward of the round trip: a cotangent goes back through combine (= dispatch) and then
                // through dispatch (= combine), and must come out unchanged.
                let cot = (0 ... n).map { Float($0 % 13) * 0.5 - Float(comm.rank) }
                let dIn = combine(dispatch(cot))
                failures.check(Array(dIn.prefix(n)) == Array(cot.prefix(n)),
                               "W=\(W) rank \(comm.rank): gradient of the round trip is not the identity")
            }
            XCTAssertEqual(failures.messages, [], "world size \(W)")
        }
    }
}
