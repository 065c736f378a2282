// `moe-dist curves`: train and eval curves from RUN_DIR/train.log, one row per (kind, step);
// train.log repeats steps after a restart, and the latest line of a step wins.
import Foundation
import ArgumentParser

struct CurvesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "curves",
        abstract: "Train and eval curves from RUN_DIR/train.log, deduplicated by step (latest write wins).",
        discussion: reflow("""
        Reads lines `step N/M | loss x | ce x | aux x | lr x | grad norm x | x tok/s | epoch x | ETA ...` and
        `eval step N | loss x | ppl x | n tokens scored`. Rows are sorted by step, train before eval.
        csv columns: kind,step,loss,ce,aux,lr,grad_norm,tokens_per_sec,epoch,ppl,scored (empty when not
        applicable); json: an array of objects with the same keys (absent values omitted).
        Example:
          moe-dist curves runs/tiny --format json
        """))

    @Argument(help: ArgumentHelp("Run directory (reads RUN_DIR/train.log).", valueName: "run-dir"))
    var runDir: String

    @Option(help: ArgumentHelp("Output format: csv or json.", valueName: "csv|json"))
    var format: String = "csv"

    func validate() throws {
        if !["csv", "json"].contains(format) { throw ValidationError("--format must be csv or json, got \(format)") }
    }

    static let columns = ["kind", "step", "loss", "ce", "aux", "lr", "grad_norm", "tokens_per_sec", "epoch", "ppl", "scored"]

    /// Parses train.log text into rows keyed by column name; the latest line of each (kind, step) wins.
    static func parse(_ text: String) -> [[String: String]] {
        var latest: [String: [String: String]] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.components(separatedBy: " | ").map { $0.trimmingCharacters(in: .whitespaces) }
            guard let first = fields.first else { continue }
            var row: [String: String] = [:]
            if first.hasPrefix("eval step ") {
                guard let s = Int(first.dropFirst("eval step ".count)) else { continue }
                row["kind"] = "eval"; row["step"] = "\(s)"
                for f in fields.dropFirst() {
                    let parts = f.split(separator: " ").map(String.init)
                    if parts.count == 2, parts[0] == "loss" || parts[0] == "ppl", Double(parts[1]) != nil { row[parts[0]] = parts[1] }
                    if parts.count >= 2, f.hasSuffix("tokens scored"), Int(parts[0]) != nil { row["scored"] = parts[0] }
                }
                guard row["loss"] != nil else { continue }
            } else if first.hasPrefix("step "), let slash = first.firstIndex(of: "/") {
                guard let s = Int(first[first.index(first.startIndex, offsetBy: 5) ..< slash]) else { continue }
                row["kind"] = "train"; row["step"] = "\(s)"
                for f in fields.dropFirst() {
                    let parts = f.split(separator: " ").map(String.init)
                    if parts.count == 2, ["loss", "ce", "aux", "lr", "epoch"].contains(parts[0]), Double(parts[1]) != nil { row[parts[0]] = parts[1] }
                    if parts.count == 3, parts[0] == "grad", parts[1] == "norm", Double(parts[2]) != nil { row["grad_norm"] = parts[2] }
                    if parts.count == 2, parts[1] == "tok/s", Double(parts[0]) != nil { row["tokens_per_sec"] = parts[0] }
                }
                guard row["loss"] != nil else { continue }
            } else { continue }
            latest[row["kind"]! + " " + row["step"]!] = row
        }
        return latest.values.sorted {
            let a = Int($0["step"]!)!, b = Int($1["step"]!)!
            return a != b ? a < b : ($0["kind"]! == "train" && $1["kind"]! == "eval")
        }
    }

    func run() throws {
        try failingCleanly {
            let path = runDir + "/train.log"
            guard let data = FileManager.default.contents(atPath: path) else { throw UserError("\(path): no such file") }
            let rows = Self.parse(String(decoding: data, as: UTF8.self))
            if format == "csv" {
                print(Self.columns.joined(separator: ","))
                for r in rows { print(Self.columns.map { r[$0] ?? "" }.joined(separator: ",")) }
            } else {
                let objs: [[String: Any]] = rows.map { r in
                    var o: [String: Any] = [:]
                    for (k, v) in r {
                        if k == "kind" { o[k] = v } else if k == "step" || k == "scored" { o[k] = Int(v)! } else { o[k] = Double(v)! }
                    }
                    return o
                }
                print(jsonText(objs, pretty: true))
            }
        }
    }
}
