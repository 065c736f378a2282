// Reading what a finished run wrote, for the tests that compare runs with each other.
import Foundation
import HDF5

/// /train/loss of `dir`/metrics.h5, and every dataset under `groups` of the run's checkpoint at `step`,
/// keyed by its path in the file ("params/blocks/0/wq", "buffers/...").
func lossesAndCheckpointTensors(runDir dir: String, step: Int, groups: [String]) throws -> ([Double], [String: [Float]]) {
    let m = try H5File.open(path: dir + "/metrics.h5", readOnly: true, fileLocking: false)
    defer { m.close() }
    let losses: [Double] = try m.read("train/loss")
    let ck = try H5File.open(path: dir + String(format: "/checkpoints/step-%08d.h5", step), readOnly: true)
    defer { ck.close() }
    var tensors: [String: [Float]] = [:]
    func walk(_ g: H5Group, _ prefix: String) throws {
        for name in try g.memberNames() {
            let path = prefix + "/" + name
            if try g.isDataset(name) { tensors[path] = try g.read(name) } else { try walk(try g.openGroup(name), path) }
        }
    }
    for top in groups { try walk(try ck.openGroup(top), top) }
    return (losses, tensors)
}
