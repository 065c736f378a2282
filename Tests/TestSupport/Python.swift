// Runs python3 + h5py as an independent reader of the HDF5 files moe-dist writes.
import Foundation
import XCTest

public struct PythonFailure: Error, CustomStringConvertible {
    public var status: Int32
    public var stderr: String
    public var description: String { "python3 exited with status \(status):\n\(stderr)" }
}

public enum Python {
    /// Runs `python3 -c script args...`; returns stdout. Skips the test when python3 or
    /// h5py is missing (fails it under MOE_DIST_REQUIRE_TOOLS=1, see `missingTool`); throws `PythonFailure` (failing the test) when the script fails.
    public static func run(_ script: String, _ args: [String] = []) throws -> String {
        try requireH5py()
        let (status, out, err) = try exec(["-c", script] + args)
        if status != 0 { throw PythonFailure(status: status, stderr: err) }
        return out
    }

    nonisolated(unsafe) private static var h5pyAvailable: Bool?

    public static func requireH5py() throws {
        if h5pyAvailable == nil {
            h5pyAvailable = (try? exec(["-c", "import h5py, numpy"]))?.0 == 0
        }
        if h5pyAvailable != true {
            throw missingTool("python3 with h5py and numpy is not available; install them (pip install h5py) to run the h5py cross-checks")
        }
    }

    private static func exec(_ args: [String]) throws -> (Int32, String, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3"] + args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }
}

