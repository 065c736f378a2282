// A communicator whose collectives are left out of MallocCounter's count: the in-process world's collectives
// (ThreadWorld, test machinery that allocates as it rendezvouses) wrapped around the model code under test,
// so an allocation test counts the model's allocations alone. Every call runs on the calling rank's thread,
// which is excluded for the call's duration. `aloneInProcess` lets a test's ranks run their own threads, as
// MPI ranks do (an in-process world's ranks otherwise run one thread each, see ParallelContext.blasWorkers).
import Collectives
import MallocCounter

final class UncountedCommunicator: Communicator {
    let inner: Communicator
    let aloneInProcess: Bool?
    init(_ inner: Communicator, aloneInProcess: Bool? = nil) { self.inner = inner; self.aloneInProcess = aloneInProcess }

    private func uncounted<T>(_ body: () -> T) -> T {
        malloc_counter_exclude_this_thread(1)
        defer { malloc_counter_exclude_this_thread(0) }
        return body()
    }

    var rank: Int { inner.rank }
    var size: Int { inner.size }
    var isAloneInProcess: Bool { aloneInProcess ?? inner.isAloneInProcess }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) { uncounted { inner.allReduceSum(buffer) } }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) { uncounted { inner.allReduceSum(buffer) } }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Int64>) { uncounted { inner.allReduceSum(buffer) } }
    func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) { uncounted { inner.allReduceMax(buffer) } }
    func allToAll(_ send: [Int64]) -> [Int64] { uncounted { inner.allToAll(send) } }
    func allToAllV(send: UnsafeBufferPointer<Float>, sendCounts: [Int], recv: UnsafeMutableBufferPointer<Float>,
                   recvCounts: [Int]) {
        uncounted { inner.allToAllV(send: send, sendCounts: sendCounts, recv: recv, recvCounts: recvCounts) }
    }
    func allToAllV(send: UnsafeBufferPointer<Int64>, sendCounts: [Int], recv: UnsafeMutableBufferPointer<Int64>,
                   recvCounts: [Int]) {
        uncounted { inner.allToAllV(send: send, sendCounts: sendCounts, recv: recv, recvCounts: recvCounts) }
    }
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) { uncounted { inner.broadcast(buffer, root: root) } }
    func barrier() { uncounted { inner.barrier() } }
    func split(color: Int, key: Int) -> Communicator {
        UncountedCommunicator(inner.split(color: color, key: key), aloneInProcess: aloneInProcess)
    }
    func abort(code: Int32, message: String) -> Never { inner.abort(code: code, message: message) }
}
