// A self-test of every collective of a `Communicator`, run by
// `moe-dist debug collectives` over MPI (or over a ThreadWorld). Each rank
// computes what it should receive from closed-form, rank-dependent inputs,
// without communicating, and compares. Inputs are small dyadic numbers or
// integers, so sums are exact whatever order an MPI library adds them in.
import Foundation

public enum CollectiveSelfTest {
    /// Runs every check on `comm` (a collective: all ranks must call it).
    /// Throws a `CommunicatorError` naming the check at the first mismatch.
    /// With `failRank`, that rank throws an injected error after the first
    /// check while the others go on into the next collective (to test that a
    /// failing rank ends the job). Returns the number of checks.
    @discardableResult
    public static func run(_ comm: Communicator, failRank: Int? = nil) throws -> Int {
        let t = SelfTestChecks(comm)
        try t.allReduceFloat()
        if let f = failRank, f == comm.rank {
            throw CommunicatorError("injected failure (--fail-rank \(f))")
        }
        try t.allReduceWide()
        try t.sameBitsEverywhere()
        try t.allToAll()
        try t.allToAllV()
        try t.broadcast()
        comm.barrier()
        try t.split()
        try t.expertParallel()
        comm.barrier()
        return t.checks
    }
}

/// The checks of `CollectiveSelfTest.run`, in the order it runs them; each is a collective.
private final class SelfTestChecks {
    let comm: Communicator
    let n: Int, me: Int
    private(set) var checks = 0

    init(_ comm: Communicator) { self.comm = comm; n = comm.size; me = comm.rank }

    func expect(_ ok: Bool, _ what: @autoclosure () -> String) throws {
        checks += 1
        if !ok { throw CommunicatorError("\(what()) (on a communicator of \(comm.size) ranks)") }
    }

    /// allReduceSum, Float: 0, 1, and many elements (MPI libraries switch algorithms by size).
    func allReduceFloat() throws {
        for count in [0, 1, 7, 100_003] {
            func x(_ r: Int, _ i: Int) -> Float { Float(r + 1) * 0.5 + Float(i % 7) * 0.25 }
            var buf = (0 ..< count).map { x(me, $0) }
            buf.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
            let bad = (0 ..< count).first { i in buf[i] != (0 ..< n).reduce(Float(0)) { $0 + x($1, i) } }
            try expect(bad == nil, "allReduceSum(Float, \(count)): element \(bad ?? 0) is \(bad.map { buf[$0] } ?? 0)")
        }
    }

    /// allReduceSum, Double and Int64 (beyond 32 bits), allReduceMax.
    func allReduceWide() throws {
        for count in [1, 1000] {
            func d(_ r: Int, _ i: Int) -> Double { Double(r) * 1024.5 + Double(i) * 0.125 }
            var bd = (0 ..< count).map { d(me, $0) }
            bd.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
            try expect((0 ..< count).allSatisfy { i in bd[i] == (0 ..< n).reduce(0.0) { $0 + d($1, i) } },
                       "allReduceSum(Double, \(count))")

            func l(_ r: Int, _ i: Int) -> Int64 { (Int64(r + 1) << 33) + Int64(i) - 5 }
            var bl = (0 ..< count).map { l(me, $0) }
            bl.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
            try expect((0 ..< count).allSatisfy { i in bl[i] == (0 ..< n).reduce(Int64(0)) { $0 + l($1, i) } },
                       "allReduceSum(Int64, \(count)): got \(bl.prefix(3))")

            func m(_ r: Int, _ i: Int) -> Double { Double((r * 7 + i * 3) % 11) - 5.5 }
            var bm = (0 ..< count).map { m(me, $0) }
            bm.withUnsafeMutableBufferPointer { comm.allReduceMax($0) }
            try expect((0 ..< count).allSatisfy { i in bm[i] == (0 ..< n).map { m($0, i) }.max()! },
                       "allReduceMax(Double, \(count))")
        }
    }

    /// Every rank gets the same bits from a sum that rounds.
    func sameBitsEverywhere() throws {
        var rounding = (0 ..< 4099).map { Float(1.0 / Double(me + 3) + Double($0) * 1e-3) }
        rounding.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
        var fromRoot = rounding
        fromRoot.withUnsafeMutableBytes { comm.broadcast($0, root: 0) }
        try expect(fromRoot.elementsEqual(rounding, by: { $0.bitPattern == $1.bitPattern }),
                   "allReduceSum(Float) gave different bits on rank 0 and this rank")
    }

    func allToAll() throws {
        let got = comm.allToAll((0 ..< n).map { Int64(me * 100 + $0) })
        try expect(got == (0 ..< n).map { Int64($0 * 100 + me) }, "allToAll: got \(got)")
    }

    /// allToAllV with irregular counts, zeros among them, small and large.
    func allToAllV() throws {
        for scale in [1, 997] {
            func count(_ i: Int, _ j: Int) -> Int { ((i * 3 + j * 5 + 1) % 4) * scale }
            func value(_ i: Int, _ j: Int, _ k: Int) -> Float { Float((i * 7919 + j * 104_729 + k * 31) % 1_000_003) }
            let sendCounts = (0 ..< n).map { count(me, $0) }
            let recvCounts = (0 ..< n).map { count($0, me) }
            let send = (0 ..< n).flatMap { j in (0 ..< count(me, j)).map { value(me, j, $0) } }
            var recv = [Float](repeating: -1, count: recvCounts.reduce(0, +))
            send.withUnsafeBufferPointer { s in
                recv.withUnsafeMutableBufferPointer { r in
                    comm.allToAllV(send: s, sendCounts: sendCounts, recv: r, recvCounts: recvCounts)
                }
            }
            let expected = (0 ..< n).flatMap { i in (0 ..< count(i, me)).map { value(i, me, $0) } }
            try expect(recv == expected, "allToAllV(scale \(scale)): received \(recv.prefix(8)), expected \(expected.prefix(8))")
        }
    }

    /// broadcast from the last rank, and a large one from rank 0.
    func broadcast() throws {
        for (root, bytes) in [(n - 1, 1001), (0, 1 << 20)] {
            var b = [UInt8](repeating: 0xAA, count: bytes)
            if me == root { for i in 0 ..< bytes { b[i] = UInt8(truncatingIfNeeded: i * 31 + 7 + root) } }
            b.withUnsafeMutableBytes { comm.broadcast($0, root: root) }
            try expect((0 ..< bytes).allSatisfy { b[$0] == UInt8(truncatingIfNeeded: $0 * 31 + 7 + root) },
                       "broadcast(root \(root), \(bytes) bytes)")
        }
    }

    /// split by parity, in reverse rank order, then reduce inside.
    func split() throws {
        let sub = comm.split(color: me % 2, key: n - me)
        let members = (0 ..< n).filter { $0 % 2 == me % 2 }.reversed().map { $0 }
        try expect(sub.size == members.count && sub.rank == members.firstIndex(of: me)!,
                   "split: rank \(sub.rank) of \(sub.size), expected \(members.firstIndex(of: me)!) of \(members.count)")
        var s = [Int64(me), 1]
        s.withUnsafeMutableBufferPointer { sub.allReduceSum($0) }
        try expect(s == [Int64(members.reduce(0, +)), Int64(members.count)], "allReduceSum in split group: got \(s)")
        let subsub = sub.split(color: 0, key: 0)
        let back = subsub.allToAll((0 ..< subsub.size).map { _ in Int64(me) })
        try expect(back == members.map { Int64($0) }, "allToAll in a split of a split: got \(back)")
    }

    /// Expert-parallel communicators for every G that divides the world.
    func expertParallel() throws {
        for g in 1 ... n where n % g == 0 {
            let layout = try ExpertParallelLayout(worldSize: n, rank: me, expertParallel: g, numExperts: 2 * n + 1)
            let c = layout.communicators(from: comm)
            var e = [Int64(me)], r = [Int64(me)]
            e.withUnsafeMutableBufferPointer { c.expertGroup.allReduceSum($0) }
            r.withUnsafeMutableBufferPointer { c.replicaGroup.allReduceSum($0) }
            let group = (0 ..< g).map { layout.groupIndex * g + $0 }
            let replicas = (0 ..< n / g).map { $0 * g + layout.groupRank }
            try expect(c.expertGroup.size == g && c.expertGroup.rank == layout.groupRank
                       && c.replicaGroup.size == n / g && c.replicaGroup.rank == layout.groupIndex
                       && e[0] == Int64(group.reduce(0, +)) && r[0] == Int64(replicas.reduce(0, +)),
                       "expert-parallel communicators for G = \(g)")
        }
    }
}
