// The run directory must be one directory for every rank: checkpoints are written in turns by several
// ranks and read back by all of them on resume, and rank 0 alone writes the history. On several hosts a
// path that is node-local scratch on one of them names a different, private directory there, and the
// run would silently lose or mix files. So before anything is read or written, rank 0 puts a token file
// with a random content in the run directory and every rank reads it back.
import Foundation
import Collectives

/// Some ranks do not see the run directory that rank 0 sees (exit status 2).
public struct RunDirectoryNotSharedError: Error, CustomStringConvertible {
    public var description: String
}

public enum SharedRunDirectory {
    /// How long a rank keeps looking for the token (a network file system may show a new file late).
    static let patience: TimeInterval = 3

    /// Checks on every rank of `world` (a collective) that `directory` is the same directory everywhere.
    /// Rank 0 creates the directory if needed. Throws `RunDirectoryNotSharedError`, the same on every rank,
    /// naming each rank and host that did not see the token. A world of one has nothing to check.
    public static func check(_ directory: String, world: Communicator) throws {
        guard world.size > 1 else { return }
        // Rank 0 writes the token and sends its content to every rank, with a last byte saying whether the
        // write worked. When it did not, there is nothing to compare: the run then fails where rank 0 first
        // writes to the directory, as on one host.
        var token = [UInt8](repeating: 0, count: 17)
        let name = ".moe-dist-shared-check"
        if world.rank == 0 {
            for i in 0 ..< 16 { token[i] = UInt8.random(in: 0 ... 255) }
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                try Data(token[0 ..< 16]).write(to: URL(fileURLWithPath: directory + "/" + name), options: .atomic)
                token[16] = 1
            } catch { token[16] = 0 }
        }
        token.withUnsafeMutableBytes { world.broadcast($0, root: 0) }
        guard token[16] == 1 else { return }

        var seen = false
        let deadline = Date().addingTimeInterval(patience)
        while true {
            if let d = FileManager.default.contents(atPath: directory + "/" + name), [UInt8](d) == Array(token[0 ..< 16]) {
                seen = true
                break
            }
            if Date() >= deadline { break }
            Thread.sleep(forTimeInterval: 0.1)
        }

        // Every rank learns who did not see it, and on which host (a gather through a sum).
        let width = 8  // Int64 words per host name (64 bytes)
        var table = [Int64](repeating: 0, count: world.size * (width + 1))
        table[world.rank * (width + 1)] = seen ? 0 : 1
        var myHost = Array(hostName().utf8.prefix(width * 8))
        myHost += [UInt8](repeating: 0, count: width * 8 - myHost.count)
        myHost.withUnsafeBytes { raw in
            for w in 0 ..< width { table[world.rank * (width + 1) + 1 + w] = raw.load(fromByteOffset: w * 8, as: Int64.self) }
        }
        table.withUnsafeMutableBufferPointer { world.allReduceSum($0) }
        world.barrier()  // every rank has looked before rank 0 removes the token
        if world.rank == 0 { try? FileManager.default.removeItem(atPath: directory + "/" + name) }

        func host(of rank: Int) -> String {
            let words = table[(rank * (width + 1) + 1) ..< ((rank + 1) * (width + 1))]
            var bytes = [UInt8]()
            for w in words { withUnsafeBytes(of: w) { bytes += $0 } }
            return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        let missing = (0 ..< world.size).filter { table[$0 * (width + 1)] != 0 }
        guard !missing.isEmpty else { return }
        let who = missing.map { "rank \($0) on host \(host(of: $0))" }.joined(separator: ", ")
        throw RunDirectoryNotSharedError(description:
            "run directory \(directory) is not shared: \(who) \(missing.count == 1 ? "does" : "do") not see the file "
            + "that rank 0 on host \(host(of: 0)) wrote in it. Every rank must see the same run directory "
            + "(checkpoints and the history are written there by several ranks): put it on a file system all hosts "
            + "share (not node-local scratch), or pass --run-dir with such a path")
    }

    /// This machine's host name (the UTS name), as `hostname` prints it.
    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "?" }
        return String(cString: buffer)
    }
}
