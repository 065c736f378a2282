// KillPoint: a test hook that ends the process with SIGKILL at a named moment of a
// checkpoint or history write, so the kill test can hit the narrow windows that a
// random timer rarely does. Armed only by the hidden `train --inject-kill POINT@STEP`.
import Foundation

public enum KillPoint: String, CaseIterable, Sendable {
    /// In the middle of a history row: some columns of /train (or /experts) have grown, others not.
    case historyColumn = "history-column"
    /// Between the /train row and the /experts row of the same step.
    case historyRow = "history-row"
    /// After the history snapshot for a checkpoint is written, before the checkpoint itself.
    case afterSnapshot = "after-snapshot"
    /// While the checkpoint exists only under its temporary name, its expert rows not yet written.
    case checkpointPartial = "checkpoint-partial"
    /// After the checkpoint is complete, just before its rename to the final name.
    case beforeRename = "before-rename"
    /// After the rename, before older checkpoints are pruned.
    case afterRename = "after-rename"
    /// In `MetricsHistory`'s open on resume, after a group was cut back, before the flush.
    case historyOpen = "history-open"
    /// At the start of a step, before any work: the kill test's backstop for a randomly timed kill, so that
    /// a fast machine cannot run past the checkpoints the later kills need.
    case stepStart = "step-start"

    nonisolated(unsafe) private static var armed: (point: KillPoint, step: Int)?
    /// The step rank 0 is at (only rank 0 sets it: emulated ranks share it, and a kill of rank 0 ends the job).
    nonisolated(unsafe) public static var currentStep = -1

    /// Parses `POINT@STEP` and arms the hook for this process.
    public static func arm(_ text: String) throws {
        let parts = text.split(separator: "@")
        guard parts.count == 2, let p = KillPoint(rawValue: String(parts[0])), let s = Int(parts[1]) else {
            throw TrainingError("--inject-kill: expected POINT@STEP with POINT one of "
                                + allCases.map(\.rawValue).joined(separator: ", ") + "; got \(text)")
        }
        armed = (p, s)
    }

    /// SIGKILLs this process if the hook is armed for `self` at the current step.
    func reached() {
        guard let a = KillPoint.armed, a.point == self, a.step == KillPoint.currentStep else { return }
        kill(getpid(), SIGKILL)
    }
}
