// A world of one: every collective is a copy or a no-op, so the distributed
// code path runs unchanged in a single process without MPI.
import Foundation

public final class SingleProcessCommunicator: Communicator {
    public init() {}

    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var isAloneInProcess: Bool { true }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) {}
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) {}
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Int64>) {}
    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) {}

    public func allToAll(_ send: [Int64]) -> [Int64] {
        if send.count != 1 { fail("allToAll: send has \(send.count) elements, expected the communicator size 1") }
        return send
    }

    public func allToAllV(send: UnsafeBufferPointer<Float>, sendCounts: [Int],
                          recv: UnsafeMutableBufferPointer<Float>, recvCounts: [Int]) {
        copyToSelf(send: send, sendCounts: sendCounts, recv: recv, recvCounts: recvCounts)
    }
    public func allToAllV(send: UnsafeBufferPointer<Int64>, sendCounts: [Int],
                          recv: UnsafeMutableBufferPointer<Int64>, recvCounts: [Int]) {
        copyToSelf(send: send, sendCounts: sendCounts, recv: recv, recvCounts: recvCounts)
    }
    private func copyToSelf<T>(send: UnsafeBufferPointer<T>, sendCounts: [Int],
                               recv: UnsafeMutableBufferPointer<T>, recvCounts: [Int]) {
        guard sendCounts.count == 1, recvCounts.count == 1 else {
            fail("allToAllV: sendCounts/recvCounts have \(sendCounts.count)/\(recvCounts.count) entries, expected 1")
        }
        let n = sendCounts[0]
        guard n >= 0, n == recvCounts[0] else {
            fail("allToAllV: rank 0 sends \(n) elements to itself but expects \(recvCounts[0])")
        }
        guard n <= send.count, n <= recv.count else {
            fail("allToAllV: \(n) elements but send holds \(send.count) and recv \(recv.count)")
        }
        if n > 0 { recv.baseAddress!.update(from: send.baseAddress!, count: n) }
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) {
        if root != 0 { fail("broadcast: root \(root) is outside 0..<1") }
    }

    public func barrier() {}

    public func split(color: Int, key: Int) -> Communicator {
        if color < 0 { fail("split: color \(color) must be >= 0") }
        return SingleProcessCommunicator()
    }

    /// Prints `moe-dist: rank 0: message` and exits with `code`.
    public func abort(code: Int32, message: String) -> Never {
        FileHandle.standardError.write(Data("moe-dist: rank 0: \(message)\n".utf8))
        exit(code)
    }

    private func fail(_ message: String) -> Never { abort(code: 1, message: message) }
}
