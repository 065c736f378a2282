// Helpers for running ThreadWorld in tests: a time bound (a hang fails the
// test instead of stalling the suite) and per-rank result collection.
import Collectives
import Foundation
import XCTest

/// Values recorded by each rank of a world, read after the world has ended.
final class PerRank<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Int: T] = [:]
    func set(_ rank: Int, _ value: T) { lock.lock(); values[rank] = value; lock.unlock() }
    subscript(rank: Int) -> T? { lock.lock(); defer { lock.unlock() }; return values[rank] }
    var count: Int { lock.lock(); defer { lock.unlock() }; return values.count }
}

enum WorldOutcome {
    case finished
    case threw(Error)
    case timedOut
}

/// Runs `ThreadWorld.run(size:)` on a helper thread and waits at most `timeout` seconds.
func runWorld(size: Int, timeout: TimeInterval = 20, _ body: @escaping (Communicator) throws -> Void) -> WorldOutcome {
    let done = DispatchSemaphore(value: 0)
    let outcome = PerRank<WorldOutcome>()
    Thread.detachNewThread {
        do { try ThreadWorld.run(size: size, body); outcome.set(0, .finished) }
        catch { outcome.set(0, .threw(error)) }
        done.signal()
    }
    if done.wait(timeout: .now() + timeout) == .timedOut { return .timedOut }
    return outcome[0]!
}

/// Runs a world that must finish without error within the time bound.
func runWorldOK(size: Int, timeout: TimeInterval = 20, file: StaticString = #filePath, line: UInt = #line,
                _ body: @escaping (Communicator) throws -> Void) {
    switch runWorld(size: size, timeout: timeout, body) {
    case .finished: break
    case .threw(let e): XCTFail("world of \(size) threw: \(e)", file: file, line: line)
    case .timedOut: XCTFail("world of \(size) did not finish within \(timeout) s", file: file, line: line)
    }
}

/// Runs a world that must fail within the time bound; returns the error.
@discardableResult
func runWorldFailing(size: Int, timeout: TimeInterval = 10, file: StaticString = #filePath, line: UInt = #line,
                     _ body: @escaping (Communicator) throws -> Void) -> Error? {
    switch runWorld(size: size, timeout: timeout, body) {
    case .finished: XCTFail("world of \(size) finished but should have failed", file: file, line: line); return nil
    case .threw(let e): return e
    case .timedOut: XCTFail("world of \(size) hung (no failure within \(timeout) s)", file: file, line: line); return nil
    }
}

/// Element i of rank r's input: not exactly summable, so the order of the sum shows in the bits.
func roundingValue(_ r: Int, _ i: Int) -> Float { Float(1.0 / Double(r + 3)) + Float(i) * 0.1 }

/// The documented ThreadWorld sum: in rank order, ((x0 + x1) + x2) + ...
func rankOrderSum<T: AdditiveArithmetic>(_ n: Int, _ x: (Int) -> T) -> T {
    var acc = x(0)
    for r in 1 ..< max(n, 1) { acc += x(r) }
    return acc
}
