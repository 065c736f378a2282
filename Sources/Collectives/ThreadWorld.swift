// ThreadWorld: an in-process world of N ranks, one thread each, for unit tests
// and for `--emulate-ranks N` (running the exact distributed code path in one
// process under a debugger).
//
// Every collective is a rendezvous of the communicator's ranks: each deposits
// its contribution (buffer addresses, counts), waits for all, reads what it
// needs from the others' buffers, and waits again so that no buffer is reused
// while another rank still reads it. Results do not depend on thread timing:
// sums are taken in rank order, ((x0 + x1) + x2) + ..., and every rank gets
// the same bits.
//
// Failure. When a rank's body throws, a rank calls `abort`, the ranks of one
// communicator call different collectives (or the same one with different
// sizes), or a rank returns from its body while others wait for it in a
// collective, the world fails: every rank waiting in a collective, or entering
// one later, ends its thread on the spot (`pthread_exit`: the rest of its body
// and any `defer` in it do not run, and whatever it holds is leaked). Ranks
// that never reach a collective run to the end of their body. `run` then
// throws: the body's own error when a body threw first, otherwise a
// `CommunicatorError` that names the rank. Collectives must be called from the
// rank's own thread (the one that runs its body).
import Foundation
import Threads
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum ThreadWorld {
    /// Runs `body` on `size` threads, each with its own rank's `Communicator`
    /// of one world, and returns when all have ended. Throws the first failure
    /// (see the file comment) after every thread has ended.
    public static func run(size: Int, _ body: @escaping (Communicator) throws -> Void) throws {
        precondition(size >= 1, "ThreadWorld.run: size \(size) must be at least 1")
        let world = World(size: size)
        let root = world.makeGroup(members: Array(0 ..< size))
        var threads: [PThread] = []
        for r in 0 ..< size {
            let comm = ThreadCommunicator(world: world, group: root, rank: r)
            threads.append(PThread.start(stackBytes: 16 << 20, owner: "ThreadWorld") {   // as deep as a main thread
                do {
                    try body(comm)
                    world.rankFinished(r, error: nil)
                } catch {
                    world.rankFinished(r, error: error)
                }
            })
        }
        for t in threads { t.join() }
        if let failure = world.failure { throw failure }
    }
}

// MARK: - World state

/// Shared state of one world; everything mutable is guarded by `cond`.
final class World: @unchecked Sendable {
    let size: Int
    let cond = NSCondition()
    /// The first failure; once set, collectives end their threads.
    var failure: Error? = nil
    var finished: [Bool]
    private var nextGroupID = 0
    /// Communicators being created by `split`, until every member has picked theirs up.
    private var pendingSplits: [SplitKey: (group: Group, remaining: Int)] = [:]

    struct SplitKey: Hashable { let parent: Int; let sequence: Int; let color: Int }

    init(size: Int) {
        self.size = size
        finished = Array(repeating: false, count: size)
    }

    func makeGroup(members: [Int]) -> Group {
        defer { nextGroupID += 1 }
        return Group(id: nextGroupID, members: members)
    }

    /// Under `cond`: the group created by a split, shared by all its members.
    func splitGroup(_ key: SplitKey, members: [Int]) -> Group {
        if let entry = pendingSplits[key] {
            if entry.remaining == 1 { pendingSplits[key] = nil }
            else { pendingSplits[key] = (entry.group, entry.remaining - 1) }
            return entry.group
        }
        let g = makeGroup(members: members)
        if members.count > 1 { pendingSplits[key] = (g, members.count - 1) }
        return g
    }

    /// Under `cond`: records the first failure and wakes every waiting rank.
    func recordFailure(_ error: Error) {
        if failure == nil { failure = error }
        cond.broadcast()
    }

    func rankFinished(_ rank: Int, error: Error?) {
        cond.lock()
        finished[rank] = true
        if let e = error { recordFailure(e) }
        cond.broadcast()
        cond.unlock()
    }
}

/// The ranks of one communicator and their rendezvous.
final class Group {
    let id: Int
    /// World ranks, in the order of their rank in this group.
    let members: [Int]
    var arrived = 0
    var generation = 0
    var slots: [Contribution?]

    init(id: Int, members: [Int]) {
        self.id = id
        self.members = members
        slots = Array(repeating: nil, count: members.count)
    }
}

/// What one rank brings to a collective: a description that must match on
/// every rank (operation and sizes) and the data.
struct Contribution {
    let signature: String
    let value: Any
}

// MARK: - The communicator of one rank

final class ThreadCommunicator: Communicator {
    let world: World
    let group: Group
    let rank: Int
    var size: Int { group.members.count }
    var isAloneInProcess: Bool { world.size == 1 }
    var worldRank: Int { group.members[rank] }
    /// Number of splits this rank made on this communicator (the same on all
    /// ranks when they call collectives in the same order).
    private var splits = 0

    init(world: World, group: Group, rank: Int) {
        self.world = world
        self.group = group
        self.rank = rank
    }

    // MARK: Rendezvous

    /// Deposits `value`, waits for every rank of the group, checks that all
    /// called the same operation, runs `read` on all contributions (in group
    /// rank order) while every rank is held, then waits again and returns.
    /// The other ranks' buffers may be read, and the parts that only this rank
    /// touches written, inside `read`.
    private func rendezvous<R>(_ signature: String, _ value: Any, _ read: ([Contribution]) -> R) -> R {
        let cond = world.cond
        cond.lock()
        leaveIfFailed()
        group.slots[rank] = Contribution(signature: signature, value: value)
        waitForAll()
        let all = group.slots.map { $0! }
        cond.unlock()

        if let odd = all.firstIndex(where: { $0.signature != all[0].signature }) {
            let calls = all.enumerated().map { "rank \($0.offset): \($0.element.signature)" }.joined(separator: "; ")
            fail("collective mismatch on a communicator of \(size) ranks (rank \(odd) differs): \(calls)")
        }
        let result = read(all)

        cond.lock()
        waitForAll()
        cond.unlock()
        return result
    }

    /// Under `cond`: a barrier of the group. Leaves the thread if the world fails.
    private func waitForAll() {
        let generation = group.generation
        group.arrived += 1
        if group.arrived == group.members.count {
            group.arrived = 0
            group.generation &+= 1
            world.cond.broadcast()
            return
        }
        while group.generation == generation {
            leaveIfFailed()
            if let gone = group.members.firstIndex(where: { world.finished[$0] }) {
                world.recordFailure(CommunicatorError(
                    "rank \(group.members[gone]) returned from its body while rank \(worldRank) waits for it "
                    + "in a collective (the ranks called different numbers of collectives)"))
                leaveIfFailed()
            }
            world.cond.wait()
        }
    }

    /// Under `cond`: ends this thread if the world has failed.
    private func leaveIfFailed() {
        if world.failure != nil {
            world.cond.unlock()
            pthread_exit(nil)
        }
    }

    /// Fails the world with `message` (naming this rank) and ends this thread.
    private func fail(_ message: String) -> Never {
        world.cond.lock()
        world.recordFailure(CommunicatorError("rank \(worldRank): \(message)"))
        world.cond.unlock()
        pthread_exit(nil)
    }

    // MARK: Reductions

    /// Rank r combines the r-th slice of every rank's buffer, in rank order,
    /// and writes the result into that slice of every buffer.
    private func reduce<T>(_ buffer: UnsafeMutableBufferPointer<T>, _ name: String, _ combine: (T, T) -> T) {
        let n = buffer.count
        rendezvous("\(name)(\(T.self), count: \(n))", buffer) { all in
            let buffers = all.map { $0.value as! UnsafeMutableBufferPointer<T> }
            let lo = n * rank / size, hi = n * (rank + 1) / size
            if lo == hi { return }
            var acc = Array(buffers[0][lo ..< hi])
            for b in buffers.dropFirst() {
                for i in lo ..< hi { acc[i - lo] = combine(acc[i - lo], b[i]) }
            }
            // Every rank has read its own slice of every buffer before anyone
            // writes it: only rank r touches slice r.
            for b in buffers { for i in lo ..< hi { b[i] = acc[i - lo] } }
        }
    }

    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) { reduce(buffer, "allReduceSum", +) }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) { reduce(buffer, "allReduceSum", +) }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Int64>) { reduce(buffer, "allReduceSum", &+) }
    func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) {
        // A NaN on any rank gives NaN on all (MPI_MAX's result with NaN depends on
        // the library's reduction order; do not rely on it to detect NaN over MPI).
        reduce(buffer, "allReduceMax") { a, b in (a.isNaN || b.isNaN) ? .nan : Swift.max(a, b) }
    }

    // MARK: Exchanges

    func allToAll(_ send: [Int64]) -> [Int64] {
        if send.count != size { fail("allToAll: send has \(send.count) elements, expected the communicator size \(size)") }
        return rendezvous("allToAll(count: \(send.count))", send) { all in
            all.map { ($0.value as! [Int64])[rank] }
        }
    }

    private struct VExchange<T> {
        let send: UnsafeBufferPointer<T>
        let sendCounts: [Int]
        let recv: UnsafeMutableBufferPointer<T>
        let recvCounts: [Int]
    }

    func allToAllV(send: UnsafeBufferPointer<Float>, sendCounts: [Int],
                   recv: UnsafeMutableBufferPointer<Float>, recvCounts: [Int]) {
        exchangeV(send: send, sendCounts: sendCounts, recv: recv, recvCounts: recvCounts, "allToAllV")
    }

    func allToAllV(send: UnsafeBufferPointer<Int64>, sendCounts: [Int],
                   recv: UnsafeMutableBufferPointer<Int64>, recvCounts: [Int]) {
        exchangeV(send: send, sendCounts: sendCounts, recv: recv, recvCounts: recvCounts, "allToAllV(Int64)")
    }

    private func exchangeV<T>(send: UnsafeBufferPointer<T>, sendCounts: [Int],
                              recv: UnsafeMutableBufferPointer<T>, recvCounts: [Int], _ name: String) {
        // Copies of the counts: the other ranks read them until they leave, and a caller reusing its count
        // arrays (as the model does) would otherwise copy them on its next write, while they still share them.
        let mine = VExchange(send: send, sendCounts: sendCounts.map { $0 }, recv: recv, recvCounts: recvCounts.map { $0 })
        rendezvous(name, mine) { all in
            let xs = all.map { $0.value as! VExchange<T> }
            if let problem = Self.checkExchange(xs) { fail("\(name): \(problem)") }
            // Rank r gathers its part of every rank's send buffer.
            var out = 0
            for (i, x) in xs.enumerated() {
                let from = x.sendCounts[..<rank].reduce(0, +)
                let n = recvCounts[i]
                if n > 0 { (recv.baseAddress! + out).update(from: x.send.baseAddress! + from, count: n) }
                out += n
            }
        }
    }

    /// The first inconsistency among the ranks' counts, or nil. Every rank
    /// sees the same contributions, so every rank finds the same problem.
    private static func checkExchange<T>(_ xs: [VExchange<T>]) -> String? {
        let n = xs.count
        for (i, x) in xs.enumerated() {
            if x.sendCounts.count != n || x.recvCounts.count != n {
                return "rank \(i) passes \(x.sendCounts.count) send and \(x.recvCounts.count) recv counts, expected \(n)"
            }
            if let c = (x.sendCounts + x.recvCounts).first(where: { $0 < 0 }) { return "rank \(i) passes a negative count \(c)" }
            let s = x.sendCounts.reduce(0, +), r = x.recvCounts.reduce(0, +)
            if s > x.send.count { return "rank \(i) sends \(s) elements from a buffer of \(x.send.count)" }
            if r > x.recv.count { return "rank \(i) receives \(r) elements into a buffer of \(x.recv.count)" }
        }
        for i in 0 ..< n {
            for j in 0 ..< n where xs[i].sendCounts[j] != xs[j].recvCounts[i] {
                return "rank \(i) sends \(xs[i].sendCounts[j]) elements to rank \(j), which expects \(xs[j].recvCounts[i])"
            }
        }
        return nil
    }

    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) {
        if root < 0 || root >= size { fail("broadcast: root \(root) is outside 0..<\(size)") }
        rendezvous("broadcast(bytes: \(buffer.count), root: \(root))", buffer) { all in
            if rank != root && buffer.count > 0 {
                buffer.copyMemory(from: UnsafeRawBufferPointer(all[root].value as! UnsafeMutableRawBufferPointer))
            }
        }
    }

    func barrier() {
        rendezvous("barrier", ()) { _ in }
    }

    func split(color: Int, key: Int) -> Communicator {
        if color < 0 { fail("split: color \(color) must be >= 0") }
        let sequence = splits
        splits += 1
        return rendezvous("split", (color, key)) { all -> Communicator in
            let choices = all.map { $0.value as! (Int, Int) }
            let mine = choices.indices
                .filter { choices[$0].0 == color }
                .sorted { (choices[$0].1, $0) < (choices[$1].1, $1) }
            let members = mine.map { group.members[$0] }
            world.cond.lock()
            let g = world.splitGroup(.init(parent: group.id, sequence: sequence, color: color), members: members)
            world.cond.unlock()
            return ThreadCommunicator(world: world, group: g, rank: mine.firstIndex(of: rank)!)
        }
    }

    /// Prints `moe-dist: rank R: message` (R the world rank) and fails the
    /// world: `ThreadWorld.run` throws a `CommunicatorError` with the message
    /// and the other ranks end at their next collective. The process goes on.
    func abort(code: Int32, message: String) -> Never {
        FileHandle.standardError.write(Data("moe-dist: rank \(worldRank): \(message)\n".utf8))
        world.cond.lock()
        world.recordFailure(CommunicatorError("rank \(worldRank) aborted (code \(code)): \(message)"))
        world.cond.unlock()
        pthread_exit(nil)
    }
}
