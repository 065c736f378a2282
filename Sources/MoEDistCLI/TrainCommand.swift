import Foundation
import ArgumentParser
import Collectives
import Configuration
import DataPipeline
import Model
import Training

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a model; under mpirun the experts are sharded over the ranks.",
        discussion: reflow("""
        Examples (as root, mpirun also needs --allow-run-as-root; on 2 cores, --oversubscribe):
          moe-dist train --config jobs/configs/tiny.yaml --run-dir runs/tiny-example
          moe-dist train --config jobs/configs/cpu-small.yaml --run-dir runs/top1 \\
              moe.top_k=1 train.max_steps=500
          mpirun -np 2 moe-dist train --config jobs/configs/cpu-small.yaml \\
              --run-dir runs/cpu-small-2ranks
          moe-dist train --config jobs/configs/tiny.yaml --run-dir runs/tiny-threads \\
              --emulate-ranks 4
        The last one runs 4 ranks as threads of one process (one debugger sees all).

        The run directory defaults to runs/<name>. On W ranks the micro-batch is the largest value up to
        train.micro_batch for which value × W divides train.global_batch (one line says so); when W does
        not divide train.global_batch the error names the override that fixes it.

        With no data.train the built-in generated corpus is used. The resolved configuration is printed
        and written to RUN_DIR/config.yaml; progress goes to standard output and RUN_DIR/train.log,
        metrics to RUN_DIR/metrics.h5, checkpoints to RUN_DIR/checkpoints/step-<8 digits>.h5.

        Resuming: --resume auto continues from the newest intact checkpoint (same or another world
        size). The configuration must match the checkpoint's: an architecture key (model.*, moe.* except
        the loss weights and capacity factor) can never change. The budget keys change freely:
        train.max_steps, train.max_tokens, train.eval_interval, train.log_interval,
        train.checkpoint_interval, train.keep_checkpoints and the gate's thresholds (gate.* except
        gate.enabled); so do the layout keys parallel.expert_parallel, parallel.balance_experts,
        parallel.collective_timeout and train.micro_batch. Any other key changes only with --allow-config-change. metrics.h5 keeps the
        original configuration and records each change and its step (root attribute config_changes).
        A changed train.max_steps or train.max_tokens moves the cosine's end to the new budget (the
        schedule is a function of the step budget); the log says how. Token files, data.tokenizer and the checkpoint must share one tokenizer fingerprint.
        Preemption: SIGTERM or SIGUSR1 finishes the current step, writes a checkpoint and the history,
        and exits with status 75 on every rank (Slurm: #SBATCH --signal=USR1@120 and --requeue).
        A rank that stops or hangs (a lost or frozen node) leaves the others waiting in a collective:
        after parallel.collective_timeout seconds (default 600; 0 = for ever) they end the job with status 1
        and a message naming the rank and host that did not arrive; the last checkpoint stays intact.
        A run directory holds one live train: a second one is refused (exit 2, naming the holder's host and
        pid); the lock of a killed run (RUN_DIR/.moe-dist.lock) is taken over by the next start, at once on
        its host, after 120 s without a heartbeat from another (docs/file-formats.md). Before anything is
        allocated, the memory estimate is compared with the memory available (MemAvailable, the memory
        cgroup, SLURM_MEM_PER_NODE or SLURM_MEM_PER_CPU): a run that cannot fit is exit 2.
        Exit statuses: 0 done, 1 runtime failure, 2 usage or configuration error, 3 bad data, 75 preempted
        (docs/exit-status.md).
        """))

    @OptionGroup var options: RunOptions

    @Option(help: ArgumentHelp("Run directory (default: runs/<name>).", valueName: "dir"))
    var runDir: String?

    @Option(help: ArgumentHelp("Run N ranks as threads in this process: the exact expert-parallel code, one debugger.",
                               valueName: "N"))
    var emulateRanks: Int?

    @Option(help: ArgumentHelp("Continue a run: 'auto' (newest intact checkpoint of the run directory, or a fresh start "
                               + "if there is none) or a checkpoint file.", valueName: "auto|file"))
    var resume: String?

    @Flag(help: ArgumentHelp("On resume, accept changed non-architecture keys beyond the budget keys (recorded in metrics.h5 config_changes)."))
    var allowConfigChange = false

    @Option(help: .hidden) var injectFailure: String?

    /// Test hook: SIGKILL this process at POINT@STEP of a checkpoint or history write (see KillPoint).
    @Option(help: .hidden) var injectKill: String?

    func run() throws {
        try failingCleanly {
            if let k = injectKill { try KillPoint.arm(k) }
            try Launch.onEveryRank(emulateRanks: emulateRanks) { world in try train(on: world) }
        }
    }

    /// One rank's part: resolve, build, choose where to start, train.
    private func train(on world: Communicator) throws {
        let (config, data, batchNote) = try Launch.resolve(options, world: world, ranksInProcess: emulateRanks ?? 1)
        // From here a rank that stops or hangs ends the job after parallel.collective_timeout seconds.
        let mpiWorld = world as? MPICommunicator
        Launch.watchCollectives(world, timeout: config.parallel.collectiveTimeout)
        let ctx = try ParallelContext.make(world: world, config: config)
        let dir = runDir ?? "runs/\(config.name)"
        // Rank 0 creates the run directory and takes its lock before anything is printed or read from it:
        // a second run on a live run's directory is refused, a killed run's stale lock is taken over.
        let lock = world.rank == 0 ? try RunDirectoryLock.acquire(
            runDirectory: dir, waitForOtherHosts: resume == "auto", warn: { printError("warning: \($0)") }) : nil
        defer { lock?.release() }
        try SharedRunDirectory.check(dir, world: world)  // before any rank reads or writes it
        let session = try makeSession(config: config, ctx: ctx, data: data, dir: dir, world: world)
        session.startNotes = batchNote.map { [$0] } ?? []
        try chooseStart(session, dir: dir, world: world)
        // A run already at its budget has nothing to train: say so instead of a banner and no step.
        if let step = session.resumeStep, step >= session.trainer.totalSteps {
            if world.rank == 0 { print(Self.finishedNote(dir: dir, step: step, session: session)) }
            return
        }
        if world.rank == 0 {
            print("resolved configuration:\n" + config.toYAML())
        }
        // The checks that leave the run directory as it was are done: waiting ranks may leave notes in it.
        if let w = mpiWorld, w.size > 1 { CollectiveWatchdog.shared.noteIn(dir + "/.collectives") }
        do {
            try session.run()
        } catch let p as PreemptedError {
            if world.rank == 0 { printError("\(p)") }
            throw ExitCode(Preemption.exitStatus)
        }
    }

    private func makeSession(config: RunConfig, ctx: ParallelContext, data: TrainingData, dir: String,
                             world: Communicator) throws -> TrainingSession {
        let session = try SlowPhase.run("building the model", show: world.rank == 0) {
            try TrainingSession(config: config, ctx: ctx, data: data, runDirectory: dir) { line in
                print(line); fflush(stdout)
            }
        }
        if let f = try InjectedFailure.parse(injectFailure), f.rank == world.rank {
            session.beforeStep = { step in if step == f.step { throw InjectedFailure(rank: f.rank, step: step) } }
        }
        return session
    }

    /// `--resume`: the newest intact checkpoint (auto), a given one, or a fresh start in a directory
    /// without an earlier run's checkpoints. Every rank resumes from the same step.
    private func chooseStart(_ session: TrainingSession, dir: String, world: Communicator) throws {
        switch resume {
        case "auto"?:
            if let path = try ResumeChoice.newest(runDirectory: dir, world: world, warn: { printError("warning: \($0)") }) {
                try Launch.agreeing(world) {
                    try session.resume(from: path, allowConfigChange: allowConfigChange, verified: world.rank == 0)
                }
            } else if world.rank == 0 {
                print("no checkpoint in \(dir)/checkpoints: starting from step 0")
            }
        case let file?:
            try Launch.agreeing(world) { try session.resume(from: file, allowConfigChange: allowConfigChange) }
        case nil:
            // A fresh run must not mix with an earlier run's checkpoints and history.
            if ResumeChoice.holdsCheckpoints(runDirectory: dir, world: world) {   // every rank knows it: one message, a clean end
                throw AgreedError(error: UserError("\(dir) already holds checkpoints of an earlier run: continue it with --resume auto, "
                                                   + "or choose another --run-dir"))
            }
        }
    }

    private static func finishedNote(dir: String, step: Int, session: TrainingSession) -> String {
        let train = session.config.train
        let budget = train.maxSteps.map { "train.max_steps \($0)" } ?? "train.max_tokens \(train.maxTokens ?? 0)"
        return "\(dir) is finished: its checkpoint is at step \(step), the end of its budget (\(budget), "
            + "\(session.trainer.totalSteps) steps); nothing to train. To train further, resume with a larger "
            + "train.max_steps or train.max_tokens."
    }
}
