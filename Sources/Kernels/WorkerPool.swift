// WorkerPool: the threads behind Blas.parallel. Each thread that opens parallel regions (the process's
// main thread, each rank thread of an in-process world) has its own pool, made on its first region and grown
// to the most workers it has asked for; its threads sleep between regions and are reused, so a region
// allocates nothing (DispatchQueue.concurrentPerform allocated about four blocks per region). A pool's
// threads end when the thread that owns it ends. The region's body reaches the threads as its two words
// (CSwiftClosure), not through withoutActuallyEscaping, which allocates a box on every call.
//
// Workers sleep on a condition variable, they do not spin: the ranks' threads together fill the cores, and a
// spinning worker would take the core another rank's thread is computing on.
import CSwiftClosure
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A counting semaphore (a mutex, a condition variable and a count; POSIX sem_init is missing on Darwin).
/// post() makes everything the poster wrote before it visible to the thread its wait() wakes.
final class WakeSignal: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var count = 0   // under mutex

    init() {
        mutex.initialize(to: pthread_mutex_t())
        cond.initialize(to: pthread_cond_t())
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        cond.deallocate()
        mutex.deallocate()
    }

    func post() {
        pthread_mutex_lock(mutex)
        count += 1
        pthread_cond_signal(cond)
        pthread_mutex_unlock(mutex)
    }

    func wait() {
        pthread_mutex_lock(mutex)
        while count == 0 { pthread_cond_wait(cond, mutex) }
        count -= 1
        pthread_mutex_unlock(mutex)
    }
}

/// The worker threads of one calling thread. `run` is called only from the owning thread.
final class WorkerPool: @unchecked Sendable {
    /// Worker i (from 0) runs body(i + 1); the owner runs body(0).
    private var starts: [WakeSignal] = []
    private var threads: [PoolThread] = []
    /// Posted once by each worker when it has finished its part of a region.
    private let finished = WakeSignal()
    /// The region's body: written by the owner before it wakes workers, cleared after all have finished.
    private var body = csc_int_closure(function: nil, context: nil)
    private var stopping = false
    /// A region is open on the owner (a body that opens another region on the same thread finds it so).
    private(set) var isBusy = false

    /// Runs body(w) for w in 0 ..< workers: body(0) on the calling thread, the rest on this pool's threads,
    /// and returns when all have returned.
    func run(workers: Int, _ body: (Int) -> Void) {
        precondition(!isBusy, "WorkerPool.run: a region is already open on this thread")
        let helpers = workers - 1
        while threads.count < helpers { addThread() }
        isBusy = true
        var words = csc_int_closure(function: nil, context: nil)
        captureClosure(body, &words)
        self.body = words
        for i in 0 ..< helpers { starts[i].post() }
        body(0)
        for _ in 0 ..< helpers { finished.wait() }
        self.body = csc_int_closure(function: nil, context: nil)   // valid only until this call returns
        isBusy = false
    }

    private func workerLoop(_ index: Int, _ start: WakeSignal) {
        while true {
            start.wait()
            if stopping { return }
            csc_call(body, index + 1)
            finished.post()
        }
    }

    private func addThread() {
        let index = threads.count, start = WakeSignal()   // the worker is handed its signal: `starts` grows
        starts.append(start)
        threads.append(PoolThread.start { [self] in workerLoop(index, start) })
    }

    /// Ends the pool's threads (they are asleep between regions) and waits for them.
    func stop() {
        stopping = true
        for i in 0 ..< starts.count { starts[i].post() }
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

/// A joinable POSIX thread running a closure.
private struct PoolThread {
    #if canImport(Darwin)
    private var id: pthread_t?
    #else
    private var id = pthread_t()
    #endif

    private final class Box { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }

    static func start(_ body: @escaping () -> Void) -> PoolThread {
        var t = PoolThread()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        pthread_attr_setstacksize(&attr, 8 << 20)   // as a Linux main thread (Darwin's default is 512 KiB)
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let rc = pthread_create(&t.id, &attr, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!)
            let body = box.takeUnretainedValue().body
            box.release()
            body()
            return nil
        }, box)
        precondition(rc == 0, "WorkerPool: pthread_create failed (\(rc))")
        return t
    }

    func join() {
        #if canImport(Darwin)
        pthread_join(id!, nil)
        #else
        pthread_join(id, nil)
        #endif
    }
}

/// Stores the two words of a non-escaping closure (defined in C: CSwiftClosure.c receives them as they are
/// passed, in Swift's calling convention). They stay valid while the caller's call is running.
@_silgen_name("csc_capture")
private func captureClosure(_ body: (Int) -> Void, _ out: UnsafeMutablePointer<csc_int_closure>)
