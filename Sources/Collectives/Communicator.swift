// The communication interface of moe-dist. Every collective is called by every
// rank of the communicator in the same order (MPI semantics). With one rank
// every call is a copy or a no-op, so one code path serves all world sizes.

/// Errors raised by a communicator (MPI failures, mismatched buffers, a peer that aborted).
public struct CommunicatorError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public protocol Communicator: AnyObject {
    /// This process's index in `0 ..< size`.
    var rank: Int { get }
    /// Number of ranks.
    var size: Int { get }
    /// True when this rank is alone in its process (an MPI rank, a world of one); false for the ranks of an
    /// in-process world, which share process-wide state such as OpenBLAS's one thread setting.
    var isAloneInProcess: Bool { get }

    /// In-place element-wise sum over all ranks.
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>)
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>)
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Int64>)
    /// In-place element-wise maximum over all ranks.
    func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Double>)

    /// `send[j]` goes to rank j; returns `recv` with `recv[i]` from rank i. `send.count == size`.
    func allToAll(_ send: [Int64]) -> [Int64]

    /// Personalised exchange of Float payloads. `sendCounts[j]` elements go to rank j,
    /// taken consecutively from `send` in rank order; `recvCounts[i]` elements arrive
    /// from rank i, stored consecutively in `recv` in rank order.
    func allToAllV(send: UnsafeBufferPointer<Float>, sendCounts: [Int],
                   recv: UnsafeMutableBufferPointer<Float>, recvCounts: [Int])
    /// The same for Int64 payloads (counts, indices).
    func allToAllV(send: UnsafeBufferPointer<Int64>, sendCounts: [Int],
                   recv: UnsafeMutableBufferPointer<Int64>, recvCounts: [Int])

    /// Root's bytes are copied to every rank (buffers have the same size on all ranks).
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int)

    func barrier()

    /// Ranks with the same `color` form a new communicator, ordered by `key` then old rank.
    func split(color: Int, key: Int) -> Communicator

    /// Ends the whole job (all ranks) with `message` on standard error and exit status `code`.
    func abort(code: Int32, message: String) -> Never
}
