// A world of one: every collective is a copy or a no-op.
import Foundation

public final class SingleProcessCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) {}
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) {}
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Int64>) {}
    public func allReduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) {}
    public func allToAll(_ send: [Int64]) -> [Int64] { send }
    public func allToAllV(send: UnsafeBufferPointer<Float>, sendCounts: [Int],
                          recv: UnsafeMutableBufferPointer<Float>, recvCounts: [Int]) {
        precondition(sendCounts == recvCounts)
        if sendCounts[0] > 0 { recv.baseAddress!.update(from: send.baseAddress!, count: sendCounts[0]) }
    }
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) {}
    public func barrier() {}
    public func split(color: Int, key: Int) -> Communicator { SingleProcessCommunicator() }
    public func abort(code: Int32, message: String) -> Never {
        FileHandle.standardError.write("moe-dist: rank 0: \(message)\n".data(using: .utf8)!)
        exit(code)
    }
}
