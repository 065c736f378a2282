import Foundation
import XCTest
import TestSupport

/// The result of running the moe-dist binary.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var seconds: Double
}

/// Runs `executable args` with a time limit (the process group is killed past it).
func runCommand(_ executable: String, _ args: [String], environment: [String: String] = [:],
                timeout: Double = 300, cwd: String? = nil) throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
    for (k, v) in environment { env[k] = v }
    p.environment = env
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    let outURL = URL(fileURLWithPath: NSTemporaryDirectory() + "moe-dist-out-\(UUID().uuidString)")
    let errURL = URL(fileURLWithPath: NSTemporaryDirectory() + "moe-dist-err-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer { try? FileManager.default.removeItem(at: outURL); try? FileManager.default.removeItem(at: errURL) }
    p.standardOutput = try FileHandle(forWritingTo: outURL)
    p.standardError = try FileHandle(forWritingTo: errURL)
    let start = Date()
    try p.run()
    let deadline = start.addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline { usleep(50_000) }
    if p.isRunning { kill(-p.processIdentifier, SIGKILL); p.terminate(); p.waitUntilExit() }
    p.waitUntilExit()
    return CommandResult(status: p.terminationStatus,
                         stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
                         stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "",
                         seconds: Date().timeIntervalSince(start))
}

var moeDist: String { TestPaths.binary }
var tinyConfig: String { TestPaths.repoRoot + "/jobs/configs/tiny.yaml" }

func requireBinary() throws {
    guard FileManager.default.isExecutableFile(atPath: moeDist) else {
        throw missingTool("\(moeDist) is not built (swift build first, or set MOE_DIST_BIN)")
    }
}

/// `mpirun` with the flags this machine needs (root, more ranks than cores), or a skip when absent.
func mpirun(_ n: Int, _ args: [String]) throws -> (String, [String]) {
    let path = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }
    guard let path else { throw missingTool("mpirun is not installed") }
    return (path, ["--allow-run-as-root", "--oversubscribe", "-np", "\(n)", moeDist] + args)
}

func temporaryDirectory(_ tag: String) -> String {
    let d = NSTemporaryDirectory() + "moe-dist-\(tag)-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}
