// WorkerPool: the threads behind Blas.parallel. Each thread that opens parallel regions (the process's
// main thread, each rank thread of an in-process world) has its own pool, made on its first region and grown
// to the most workers it has asked for; its threads sleep between regions and are reused, so a region
// allocates nothing (DispatchQueue.concurrentPerform allocated about four blocks per region). A pool's
// threads end when the thread that owns it ends. The region's body reaches the threads as its two words
// (CSwiftClosure), not through withoutActuallyEscaping, which allocates a box on every call.
//
// Workers sleep on a condition variable, they do not spin: the ranks' threads together fill the cores, and a
// spinning worker would take the core another rank's thread is computing on. The calling thread claims parts
// of its region too, so a short region does not wait for a worker to wake.
import CSwiftClosure
import Threads
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The worker threads of one calling thread. `run` is called only from the owning thread.
///
/// A region is its body, its part count and the next unclaimed part, under `mutex`. The owner publishes a
/// region and wakes as many workers as it has other parts, then claims parts itself like any worker; each
/// part runs exactly once, on whichever thread claims it first, and `run` returns when every part has
/// finished. So a region too short to be worth a wake-up runs on the owner alone (as it did under
/// concurrentPerform), and a long one on all the threads.
final class WorkerPool: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// A worker's stack: as a Linux main thread's (Darwin's default is 512 KiB).
    private let stackBytes = 8 << 20
    /// Workers sleep on it between regions.
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// The owner sleeps on it until every part has finished.
    private let allDone = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // The open region, under `mutex`: its body (valid only while `run` runs), parts, next part to claim,
    // parts finished; `generation` counts regions, so a worker knows one began while it slept.
    private var body = csc_int_closure(function: nil, context: nil)
    private var parts = 0, next = 0, finished = 0, generation = 0
    private var stopping = false
    private var threads: [PThread] = []   // the owner's alone
    /// A region is open on the owner (a body that opens another region on the same thread finds it so).
    private(set) var isBusy = false

    init() {
        mutex.initialize(to: pthread_mutex_t())
        wake.initialize(to: pthread_cond_t())
        allDone.initialize(to: pthread_cond_t())
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        pthread_cond_init(allDone, nil)
    }

    deinit {
        pthread_cond_destroy(allDone)
        pthread_cond_destroy(wake)
        pthread_mutex_destroy(mutex)
        allDone.deallocate()
        wake.deallocate()
        mutex.deallocate()
    }

    /// Runs body(w) once for every w in 0 ..< workers, on the calling thread and up to workers - 1 of the
    /// pool's, and returns when all have returned.
    func run(workers: Int, _ body: (Int) -> Void) {
        precondition(!isBusy, "WorkerPool.run: a region is already open on this thread")
        while threads.count < workers - 1 { threads.append(PThread.start(stackBytes: stackBytes, owner: "WorkerPool") { [self] in workerLoop() }) }
        isBusy = true
        var words = csc_int_closure(function: nil, context: nil)
        captureClosure(body, &words)
        pthread_mutex_lock(mutex)
        self.body = words
        parts = workers; next = 0; finished = 0
        generation &+= 1
        pthread_mutex_unlock(mutex)
        for _ in 1 ..< workers { pthread_cond_signal(wake) }
        pthread_mutex_lock(mutex)
        runParts()
        while finished < parts { pthread_cond_wait(allDone, mutex) }
        self.body = csc_int_closure(function: nil, context: nil)
        pthread_mutex_unlock(mutex)
        isBusy = false
    }

    /// Claims and runs parts of the open region until none is left; called and returns with `mutex` held.
    private func runParts() {
        while next < parts {
            let w = next, words = body
            next += 1
            pthread_mutex_unlock(mutex)
            csc_call(words, w)
            pthread_mutex_lock(mutex)
            finished += 1
            if finished == parts { pthread_cond_signal(allDone) }
        }
    }

    private func workerLoop() {
        pthread_mutex_lock(mutex)
        var seen = generation
        while true {
            while generation == seen && !stopping { pthread_cond_wait(wake, mutex) }
            if stopping { break }
            seen = generation
            runParts()
        }
        pthread_mutex_unlock(mutex)
    }

    /// Ends the pool's threads (they are asleep between regions) and waits for them.
    func stop() {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_mutex_unlock(mutex)
        pthread_cond_broadcast(wake)
        for i in 0 ..< threads.count { threads[i].join() }
        threads.removeAll()
    }

    /// The calling thread's pool, made on first use; it is stopped when the thread ends.
    static var forThisThread: WorkerPool {
        if let p = pthread_getspecific(poolKey) { return Unmanaged<WorkerPool>.fromOpaque(p).takeUnretainedValue() }
        let pool = WorkerPool()
        pthread_setspecific(poolKey, Unmanaged.passRetained(pool).toOpaque())
        return pool
    }

    /// The thread-specific slot of each thread's pool; its destructor stops and frees the pool of a thread
    /// that ends (a rank thread of an in-process world, a worker of a pool with its own regions).
    private static let poolKey: pthread_key_t = {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key) { p in WorkerPool.threadEnded(p) }
        precondition(rc == 0, "WorkerPool: pthread_key_create failed (\(rc))")
        return key
    }()

    private static func threadEnded(_ p: UnsafeMutableRawPointer?) {
        guard let p else { return }
        Unmanaged<WorkerPool>.fromOpaque(p).takeRetainedValue().stop()
    }
}

/// Stores the two words of a non-escaping closure (defined in C: CSwiftClosure.c receives them as they are
/// passed, in Swift's calling convention). They stay valid while the caller's call is running.
@_silgen_name("csc_capture")
private func captureClosure(_ body: (Int) -> Void, _ out: UnsafeMutablePointer<csc_int_closure>)
