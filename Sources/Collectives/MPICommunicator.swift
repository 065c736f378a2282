// The MPI implementation of `Communicator`: one object per MPI communicator.
// Any failure of an MPI call, or a misuse that MPI would turn into memory
// corruption (short buffers, counts beyond INT_MAX), aborts the whole job with
// a message: a collective that fails on one rank leaves the others waiting,
// and nothing short of ending the job recovers from that.
import CMPI
import Foundation

public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public var isAloneInProcess: Bool { true }
    /// The underlying `MPI_Comm`.
    let handle: MPI_Comm
    private let ownsHandle: Bool
    /// How the collective watchdog names this communicator and counts its calls.
    let identity: CollectiveWatchdog.Identity
    private let watchdog = CollectiveWatchdog.shared

    /// Most elements (bytes for `broadcast`) per MPI call: longer reductions
    /// and broadcasts are cut into pieces, since MPI counts are C `int`.
    /// `Int32.max` unless lowered to test the cutting (set it on every rank).
    nonisolated(unsafe) public static var maxElementsPerCall = Int(Int32.max)

    /// `MPI_COMM_WORLD`, starting MPI on first use (see `MPI.initialize()`).
    /// Without `mpirun` this is a world of one. If MPI cannot start, the
    /// process exits with status 1 and a message.
    public static func world() -> MPICommunicator {
        worldLock.lock(); defer { worldLock.unlock() }
        if let w = worldInstance { return w }
        do {
            try MPI.initialize()
        } catch {
            FileHandle.standardError.write(Data("moe-dist: cannot start MPI: \(error)\n".utf8))
            exit(1)
        }
        let w = MPICommunicator(handle: moe_mpi_comm_world(), owns: false, label: "world")
        worldInstance = w
        return w
    }
    private static let worldLock = NSLock()
    nonisolated(unsafe) private static var worldInstance: MPICommunicator? = nil

    private init(handle: MPI_Comm, owns: Bool, label: String) {
        self.handle = handle
        self.ownsHandle = owns
        var r: Int32 = 0, s: Int32 = 0
        MPICommunicator.mustSucceed(moe_mpi_comm_rank(handle, &r), "MPI_Comm_rank", rank: nil)
        MPICommunicator.mustSucceed(moe_mpi_comm_size(handle, &s), "MPI_Comm_size", rank: nil)
        rank = Int(r)
        size = Int(s)
        var worldRanks = [Int32](repeating: 0, count: Int(s))
        MPICommunicator.mustSucceed(moe_mpi_comm_world_ranks(handle, s, &worldRanks), "MPI_Group_translate_ranks", rank: nil)
        identity = .init(label: label, worldRanks: worldRanks.map { Int($0) })
    }

    /// Runs one MPI call under the collective watchdog's eye (parallel.collective_timeout).
    @inline(__always) private func watched<R>(_ what: StaticString, _ call: () -> R) -> R {
        watchdog.enter(what, identity)
        defer { watchdog.leave() }
        return call()
    }

    deinit {
        if ownsHandle && MPI.isActive {
            var h: MPI_Comm? = handle
            _ = moe_mpi_comm_free(&h)
        }
    }

    // MARK: Reductions

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) {
        chunked(buffer, "MPI_Allreduce(sum, float)") { moe_mpi_allreduce_sum_float(handle, $0, $1) }
    }
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) {
        chunked(buffer, "MPI_Allreduce(sum, double)") { moe_mpi_allreduce_sum_double(handle, $0, $1) }
    }
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Int64>) {
        chunked(buffer, "MPI_Allreduce(sum, int64)") { moe_mpi_allreduce_sum_int64(handle, $0, $1) }
    }
    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) {
        chunked(buffer, "MPI_Allreduce(max, double)") { moe_mpi_allreduce_max_double(handle, $0, $1) }
    }

    /// Runs `call` on consecutive pieces of at most `maxElementsPerCall` elements.
    /// Element-wise reductions give the same result whatever the pieces; every
    /// rank has the same count, so every rank makes the same calls.
    private func chunked<T>(_ buffer: UnsafeMutableBufferPointer<T>, _ what: StaticString,
                            _ call: (UnsafeMutablePointer<T>, Int32) -> Int32) {
        guard let base = buffer.baseAddress, buffer.count > 0 else {
            // Zero elements is still a collective: every rank must take part.
            let scratch = UnsafeMutablePointer<T>.allocate(capacity: 1)
            defer { scratch.deallocate() }
            return mustSucceed(watched(what) { call(scratch, 0) }, "\(what)")
        }
        var start = 0
        while start < buffer.count {
            let n = min(MPICommunicator.maxElementsPerCall, buffer.count - start)
            mustSucceed(watched(what) { call(base + start, Int32(n)) }, "\(what)")
            start += n
        }
    }

    // MARK: Exchanges

    public func allToAll(_ send: [Int64]) -> [Int64] {
        if send.count != size { fail("allToAll: send has \(send.count) elements, expected the communicator size \(size)") }
        var recv = [Int64](repeating: 0, count: size)
        let code = send.withUnsafeBufferPointer { s in
            recv.withUnsafeMutableBufferPointer { r in
                watched("MPI_Alltoall(int64)") { moe_mpi_alltoall_int64(handle, s.baseAddress!, r.baseAddress!) }
            }
        }
        mustSucceed(code, "MPI_Alltoall(int64)")
        return recv
    }

    public func allToAllV(send: UnsafeBufferPointer<Float>, sendCounts: [Int],
                          recv: UnsafeMutableBufferPointer<Float>, recvCounts: [Int]) {
        let sendDispls = displacements(sendCounts, buffer: send.count, "send")
        let recvDispls = displacements(recvCounts, buffer: recv.count, "recv")
        // MPI wants non-null buffers even when nothing moves.
        var spare: Float = 0
        withUnsafeMutablePointer(to: &spare) { spareP in
            let s = send.baseAddress ?? UnsafePointer(spareP)
            let r = recv.baseAddress ?? spareP
            let sc = sendCounts.map { Int32($0) }, rc = recvCounts.map { Int32($0) }
            mustSucceed(watched("MPI_Alltoallv(float)") { moe_mpi_alltoallv_float(handle, s, sc, sendDispls, r, rc, recvDispls) },
                        "MPI_Alltoallv(float)")
        }
    }

    public func allToAllV(send: UnsafeBufferPointer<Int64>, sendCounts: [Int],
                          recv: UnsafeMutableBufferPointer<Int64>, recvCounts: [Int]) {
        let sendDispls = displacements(sendCounts, buffer: send.count, "send")
        let recvDispls = displacements(recvCounts, buffer: recv.count, "recv")
        var spare: Int64 = 0
        withUnsafeMutablePointer(to: &spare) { spareP in
            let s = send.baseAddress ?? UnsafePointer(spareP)
            let r = recv.baseAddress ?? spareP
            let sc = sendCounts.map { Int32($0) }, rc = recvCounts.map { Int32($0) }
            mustSucceed(watched("MPI_Alltoallv(int64)") { moe_mpi_alltoallv_int64(handle, s, sc, sendDispls, r, rc, recvDispls) },
                        "MPI_Alltoallv(int64)")
        }
    }

    private func displacements(_ counts: [Int], buffer: Int, _ side: String) -> [Int32] {
        switch MPICommunicator.cDisplacements(counts, size: size, buffer: buffer, side: side) {
        case .success(let d): return d
        case .failure(let e): fail("allToAllV: \(e)")
        }
    }

    /// Prefix sums of `counts` as C ints, after checking them against the
    /// communicator size, the buffer and INT_MAX.
    static func cDisplacements(_ counts: [Int], size: Int, buffer: Int, side: String)
        -> Result<[Int32], CommunicatorError> {
        if counts.count != size {
            return .failure(.init("\(side)Counts has \(counts.count) entries, expected the communicator size \(size)"))
        }
        var displs = [Int32](), offset = 0
        displs.reserveCapacity(size)
        for (j, c) in counts.enumerated() {
            if c < 0 { return .failure(.init("\(side)Counts[\(j)] = \(c) is negative")) }
            if offset > Int(Int32.max) || c > Int(Int32.max) {
                return .failure(.init("\(side) count or displacement beyond INT_MAX (\(Int32.max)) elements at rank \(j): "
                                      + "MPI counts are C int; exchange fewer elements per call"))
            }
            displs.append(Int32(offset))
            offset += c
        }
        if offset > buffer {
            return .failure(.init("\(side)Counts sum to \(offset) elements but the \(side) buffer holds \(buffer)"))
        }
        return .success(displs)
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) {
        if root < 0 || root >= size { fail("broadcast: root \(root) is outside 0..<\(size)") }
        guard let base = buffer.baseAddress, buffer.count > 0 else { return barrier() }
        var start = 0
        while start < buffer.count {
            let n = min(MPICommunicator.maxElementsPerCall, buffer.count - start)
            mustSucceed(watched("MPI_Bcast") { moe_mpi_bcast_bytes(handle, base + start, Int32(n), Int32(root)) }, "MPI_Bcast")
            start += n
        }
    }

    public func barrier() {
        mustSucceed(watched("MPI_Barrier") { moe_mpi_barrier(handle) }, "MPI_Barrier")
    }

    /// Every rank's `text` (UTF-8, cut to `width` bytes), in rank order.
    public func allGatherStrings(_ text: String, width: Int) -> [String] {
        var mine = [UInt8](repeating: 0, count: width)
        for (i, b) in text.utf8.prefix(width).enumerated() { mine[i] = b }
        var all = [UInt8](repeating: 0, count: width * size)
        mustSucceed(watched("MPI_Allgather") { moe_mpi_allgather_bytes(handle, mine, &all, Int32(width)) }, "MPI_Allgather")
        return (0 ..< size).map { r in
            String(decoding: all[r * width ..< (r + 1) * width].prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// `color` must be >= 0 (every rank lands in some communicator).
    public func split(color: Int, key: Int) -> Communicator {
        if color < 0 || color > Int(Int32.max) { fail("split: color \(color) must be in 0...\(Int32.max)") }
        if key < Int(Int32.min) || key > Int(Int32.max) { fail("split: key \(key) does not fit a C int") }
        var newHandle: MPI_Comm? = nil
        mustSucceed(watched("MPI_Comm_split") { moe_mpi_comm_split(handle, Int32(color), Int32(key), &newHandle) },
                    "MPI_Comm_split")
        guard let h = newHandle else { fail("MPI_Comm_split returned no communicator") }
        return MPICommunicator(handle: h, owns: true, label: "\(identity.label)/split(color \(color))")
    }

    public func abort(code: Int32, message: String) -> Never {
        MPICommunicator.abortJob(code: code, message: message, rank: worldRank)
    }

    // MARK: Failure

    /// This process's rank in `MPI_COMM_WORLD` (for messages).
    private var worldRank: Int? {
        var r: Int32 = 0
        return moe_mpi_comm_rank(moe_mpi_comm_world(), &r) == MPI_SUCCESS ? Int(r) : nil
    }

    private func fail(_ message: String) -> Never {
        MPICommunicator.abortJob(code: 1, message: message, rank: worldRank)
    }

    private func mustSucceed(_ code: Int32, _ what: @autoclosure () -> String) {
        if code != MPI_SUCCESS { MPICommunicator.mustSucceed(code, what(), rank: worldRank) }
    }

    private static func mustSucceed(_ code: Int32, _ what: @autoclosure () -> String, rank: Int?) {
        do { try MPI.check(code, what()) } catch {
            abortJob(code: 1, message: "\(error)", rank: rank)
        }
    }

    /// Prints `moe-dist: rank R: message` and ends every rank of the job.
    static func abortJob(code: Int32, message: String, rank: Int?) -> Never {
        let who = rank.map { "rank \($0): " } ?? ""
        FileHandle.standardError.write(Data("moe-dist: \(who)\(message)\n".utf8))
        if MPI.isActive { _ = moe_mpi_abort(moe_mpi_comm_world(), code) }
        exit(code)
    }
}
