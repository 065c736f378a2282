// A finished (or running) run directory as the gates and reports read it: its configuration and
// its whole metrics.h5 (Training/RunMetrics.swift). metrics.h5 is self-describing: a directory that
// holds only it (histories copied back from a cluster) is a run record too, its configuration being
// the `config` attribute with any `config_changes` applied.
import Foundation
import Configuration
import Training

/// A run directory: RUN_DIR/metrics.h5, and RUN_DIR/config.yaml when it is there.
public struct RunRecord: Sendable {
    public var directory: String
    public var config: RunConfig
    public var metrics: RunMetrics

    public init(directory: String, config: RunConfig, metrics: RunMetrics) {
        self.directory = directory; self.config = config; self.metrics = metrics
    }

    /// Reads RUN_DIR/metrics.h5 and the run's configuration: RUN_DIR/config.yaml (the configuration the
    /// run last used) if present, otherwise metrics.h5's `config` with its `config_changes` applied.
    public static func load(_ directory: String) throws -> RunRecord {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
            throw DataError("\(directory): no such run directory")
        }
        let metricsPath = directory + "/metrics.h5"
        guard FileManager.default.fileExists(atPath: metricsPath) else {
            throw DataError("\(metricsPath): no such file (not a run directory, or the run has not started)")
        }
        let metrics = try RunMetrics.read(metricsPath)
        return RunRecord(directory: directory, config: try config(directory, metrics: metrics), metrics: metrics)
    }

    /// The configuration of a run directory (see `load`), reading metrics.h5 only if there is no config.yaml.
    public static func config(_ directory: String, metrics known: RunMetrics? = nil) throws -> RunConfig {
        let configPath = directory + "/config.yaml"
        if FileManager.default.fileExists(atPath: configPath) { return try ConfigLoader.load(yamlPath: configPath, overrides: []) }
        let metricsPath = directory + "/metrics.h5"
        guard known != nil || FileManager.default.fileExists(atPath: metricsPath) else {
            throw DataError("\(directory): neither config.yaml nor metrics.h5 (not a run directory)")
        }
        let m = try known ?? RunMetrics.read(metricsPath)
        guard let json = m.configJSON else { throw DataError("\(metricsPath): no config attribute, and no config.yaml beside it") }
        var config: RunConfig
        do { config = try RunConfig.fromJSON(json) } catch { throw DataError("\(metricsPath): config attribute: \(error)") }
        try ConfigLoader.apply(overrides: m.configChanges.map { "\($0.key)=\($0.new)" }, to: &config)
        return config
    }
}
