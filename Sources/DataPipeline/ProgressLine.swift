// A progress line on stderr for long phases: done / total, rate and ETA.
// On a terminal it redraws in place at most 10 times a second; otherwise (a log
// file, a pipe) it prints a plain line at most every 2 seconds.
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public final class ProgressLine {
    public enum Unit { case bytes, items(String) }

    public let label: String
    public let unit: Unit
    private var total: Int64 = 0
    private var startTime = 0.0
    private var lastDraw = -1.0
    private let isTTY: Bool
    private let interval: Double

    public init(_ label: String, unit: Unit = .bytes) {
        self.label = label
        self.unit = unit
        isTTY = isatty(2) != 0
        interval = isTTY ? 0.1 : 2.0
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    public func start(total: Int64) {
        self.total = max(total, 1)
        startTime = Self.now()
        lastDraw = startTime
    }

    public func update(_ done: Int64) {
        let t = Self.now()
        if t - lastDraw < interval { return }
        lastDraw = t
        draw(done, t, final: false)
    }

    public func finish() { draw(total, Self.now(), final: true) }

    private func draw(_ done: Int64, _ t: Double, final: Bool) {
        let elapsed = max(t - startTime, 1e-9)
        let frac = min(1, Double(done) / Double(total))
        let rate = Double(done) / elapsed
        var line: String
        switch unit {
        case .bytes:
            line = String(format: "%@ %6.1f / %.1f MB  %6.1f MB/s", label, Double(done) / 1e6, Double(total) / 1e6, rate / 1e6)
        case .items(let name):
            line = String(format: "%@ %lld / %lld %@  %.0f/s", label, done, total, name, rate)
        }
        if isTTY {
            let width = 24, filled = Int(frac * Double(width))
            line = "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] " + line
        } else {
            line += String(format: "  %3.0f%%", frac * 100)
        }
        if final {
            line += String(format: "  done in %.1f s", elapsed)
        } else if rate > 0 {
            line += String(format: "  ETA %.0f s", Double(total - done) / rate)
        }
        let out = isTTY ? "\r\u{1B}[K" + line + (final ? "\n" : "") : line + "\n"
        FileHandle.standardError.write(out.data(using: .utf8)!)
    }
}

/// Whether a slow phase was announced (by the timer) and has finished (on the caller's thread).
private final class SlowPhaseState: @unchecked Sendable {
    let lock = NSLock()
    var announced = false, finished = false
}

/// A start-up phase that says so when it is slow: if `body` is still running after `after` seconds, one
/// line `start-up: <label> ...` goes to stderr, and `start-up: <label>: done in N s` when it ends, so no
/// start-up phase (generating the corpus, checking a large token file, building or loading a large
/// model) sits silent for more than a few seconds. `show` false (ranks other than 0) prints nothing.
public enum SlowPhase {
    /// Seconds before a phase is announced: 2, or MOE_DIST_SLOW_PHASE_SECONDS (tests set 0 to see every phase).
    public static let announceAfter: Double =
        ProcessInfo.processInfo.environment["MOE_DIST_SLOW_PHASE_SECONDS"].flatMap(Double.init).map { max($0, 0) } ?? 2

    public static func run<T>(_ label: String, show: Bool = true, after: Double = announceAfter, _ body: () throws -> T) rethrows -> T {
        guard show else { return try body() }
        let state = SlowPhaseState(), start = ProgressLine.now()
        let announce = DispatchWorkItem {
            state.lock.lock(); defer { state.lock.unlock() }
            guard !state.finished else { return }
            state.announced = true
            FileHandle.standardError.write(Data("start-up: \(label) ...\n".utf8))
        }
        if after <= 0 { announce.perform() } else {
            DispatchQueue.global(qos: .utility).asyncAfter(deadline: .now() + after, execute: announce)
        }
        defer {
            announce.cancel()
            state.lock.lock()
            state.finished = true
            if state.announced {
                FileHandle.standardError.write(Data(String(format: "start-up: %@: done in %.1f s\n", label, ProgressLine.now() - start).utf8))
            }
            state.lock.unlock()
        }
        return try body()
    }
}
