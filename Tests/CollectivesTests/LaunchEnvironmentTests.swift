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
        // Uneven nodes: each rank counts the tasks of its own node (the step's list before the job's).
        let uneven = ["SLURM_TASKS_PER_NODE": "8(x4)", "SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_LOCALID": "0"]
        let node3 = LaunchEnvironment(environment: uneven.merging(["SLURM_STEP_NODEID": "3", "SLURM_NODEID": "3"]) { $1 })
        XCTAssertEqual([node3.localRank, node3.localSize], [0, 1])
        XCTAssertEqual(node3.blasThreads(cores: 2), 2, "a node's only rank gets all its cores")
        let node2 = LaunchEnvironment(environment: uneven.merging(["SLURM_NODEID": "2", "SLURM_LOCALID": "1"]) { $1 })
        XCTAssertEqual([node2.localRank, node2.localSize], [1, 2])
        XCTAssertEqual(node2.blasThreads(cores: 2), 1)
        let jobOnly = LaunchEnvironment(environment: ["SLURM_TASKS_PER_NODE": "3,1", "SLURM_NODEID": "1", "SLURM_LOCALID": "0"])
        XCTAssertEqual(jobOnly.localSize, 1)
        XCTAssertEqual(LaunchEnvironment.tasksOnNode(4, "2(x3),1"), nil, "past the list's end")
        XCTAssertEqual(LaunchEnvironment.tasksOnNode(0, "2(3)"), nil, "malformed")
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
