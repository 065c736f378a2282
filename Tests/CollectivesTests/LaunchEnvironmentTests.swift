import Collectives
import XCTest

final class LaunchEnvironmentTests: XCTestCase {
    func testWithoutALauncherThisIsTheOnlyRank() {
        let env = LaunchEnvironment(environment: [:])
        XCTAssertEqual([env.localRank, env.localSize], [0, 1])
        XCTAssertNil(env.source)
        XCTAssertEqual(env.blasThreads(cores: 8), 8)
    }

    func testOpenMPIVariablesWinOverSlurm() {
        let env = LaunchEnvironment(environment: [
            "OMPI_COMM_WORLD_LOCAL_RANK": "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "3",
            "SLURM_LOCALID": "0", "SLURM_NTASKS_PER_NODE": "8"])
        XCTAssertEqual([env.localRank, env.localSize], [2, 3])
        XCTAssertEqual(env.blasThreads(cores: 8), 2)
        XCTAssertEqual(env.blasThreads(cores: 2), 1, "never fewer than one thread")
        XCTAssertEqual(env.blasThreads(cores: 12, ranksPerProcess: 2), 2, "emulated ranks share the process's share")
    }

    func testSlurmFallbacks() {
        let a = LaunchEnvironment(environment: ["SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "4"])
        XCTAssertEqual([a.localRank, a.localSize], [1, 4])
        let b = LaunchEnvironment(environment: ["SLURM_LOCALID": "3", "SLURM_TASKS_PER_NODE": "4(x2)"])
        XCTAssertEqual([b.localRank, b.localSize], [3, 4])
        let bad = LaunchEnvironment(environment: ["SLURM_LOCALID": "5", "SLURM_NTASKS_PER_NODE": "4"])
        XCTAssertEqual([bad.localRank, bad.localSize], [0, 1], "a local rank beyond the local size is ignored")
    }

    func testOpenBLASVariableLeavesThreadsAlone() {
        let env = LaunchEnvironment(environment: ["OPENBLAS_NUM_THREADS": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
                                                  "OMPI_COMM_WORLD_LOCAL_SIZE": "2"])
        XCTAssertEqual(env.blasThreadsOverride, 3)
        XCTAssertNil(env.blasThreads(cores: 8))
    }
}
