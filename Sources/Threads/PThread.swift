// Threads: one joinable POSIX thread, shared by the kernels' worker pool and the in-process world of ranks
// (Collectives.ThreadWorld). Plain pthreads rather than Foundation's Thread or a dispatch queue: a rank that
// fails ends its thread with `pthread_exit`, which those would not survive, and a pool thread's stack size
// must be set.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A joinable POSIX thread running a closure.
public struct PThread {
    #if canImport(Darwin)
    private var id: pthread_t?
    #else
    private var id = pthread_t()
    #endif

    private final class Box { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }

    /// Starts `body` on a new thread with a stack of `stackBytes`; `owner` names the caller if it fails.
    public static func start(stackBytes: Int, owner: String, _ body: @escaping () -> Void) -> PThread {
        var t = PThread()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        defer { pthread_attr_destroy(&attr) }
        pthread_attr_setstacksize(&attr, stackBytes)
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let rc = pthread_create(&t.id, &attr, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!)
            let body = box.takeUnretainedValue().body
            box.release()
            body()
            return nil
        }, box)
        precondition(rc == 0, "\(owner): pthread_create failed (\(rc))")
        return t
    }

    /// Waits for the thread to end.
    public func join() {
        #if canImport(Darwin)
        pthread_join(id!, nil)
        #else
        pthread_join(id, nil)
        #endif
    }
}
