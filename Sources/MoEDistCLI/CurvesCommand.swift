// `moe-dist curves`: train and eval curves from RUN_DIR/metrics.h5, one row per (kind, step).
// The history holds each step once (a resumed run cuts it back to its checkpoint first), so
// there is nothing to deduplicate; a directory holding only metrics.h5 is enough.
import Foundation
import ArgumentParser
import Training

struct CurvesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "curves",
        abstract: "Train and eval curves from RUN_DIR/metrics.h5.",
        discussion: reflow("""
        One row per /train row (loss, ce, aux, lr, grad_norm, tokens_per_sec, epoch) and per /eval row
        (loss, ppl, scored, epoch), sorted by step, train before eval. Numbers are the stored float64
        values in their shortest round-trip form.
        csv columns: kind,step,loss,ce,aux,lr,grad_norm,tokens_per_sec,epoch,ppl,scored (empty when not
        applicable); json: an array of objects with the same keys (absent values omitted).
        Example:
          moe-dist curves runs/tiny --format json
        """))

    @Argument(help: ArgumentHelp("Run directory (reads RUN_DIR/metrics.h5).", valueName: "run-dir"))
    var runDir: String

    @Option(help: ArgumentHelp("Output format: csv or json.", valueName: "csv|json"))
    var format: String = "csv"

    func validate() throws {
        if !["csv", "json"].contains(format) { throw ValidationError("--format must be csv or json, got \(format)") }
    }

    static let columns = ["kind", "step", "loss", "ce", "aux", "lr", "grad_norm", "tokens_per_sec", "epoch", "ppl", "scored"]

    /// Rows keyed by column name (numbers as Double or Int), train before eval at equal steps.
    static func rows(_ m: RunMetrics) -> [[String: Any]] {
        var out: [(step: Int64, kind: Int, row: [String: Any])] = []
        for i in m.trainStep.indices {
            out.append((m.trainStep[i], 0, ["kind": "train", "step": Int(m.trainStep[i]), "loss": m.trainLoss[i], "ce": m.trainCE[i],
                                            "aux": m.trainAux[i], "lr": m.trainLR[i], "grad_norm": m.trainGradNorm[i],
                                            "tokens_per_sec": m.trainTokensPerSec[i], "epoch": m.trainEpoch[i]]))
        }
        for i in m.evalStep.indices {
            out.append((m.evalStep[i], 1, ["kind": "eval", "step": Int(m.evalStep[i]), "loss": m.evalLoss[i], "ppl": m.evalPPL[i],
                                           "scored": Int(m.evalScored[i]), "epoch": m.evalEpoch[i]]))
        }
        return out.sorted { ($0.step, $0.kind) < ($1.step, $1.kind) }.map(\.row)
    }

    func run() throws {
        try failingCleanly {
            let path = runDir + "/metrics.h5"
            guard FileManager.default.fileExists(atPath: path) else { throw DataError("\(path): no such file (not a run directory?)") }
            let rows = Self.rows(try RunMetrics.read(path))
            if format == "csv" {
                print(Self.columns.joined(separator: ","))
                for r in rows { print(Self.columns.map { r[$0].map { "\($0)" } ?? "" }.joined(separator: ",")) }
            } else {
                print(jsonText(rows, pretty: true))
            }
        }
    }
}
