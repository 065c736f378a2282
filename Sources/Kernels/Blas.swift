// Blas: the one door to OpenBLAS. Every matrix product in the project goes through `Blas.gemm`.
import COpenBLAS
import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Parallel regions in progress (several ranks of an in-process world may be inside one at once). While any
/// is, OpenBLAS runs one thread per caller; the first region in saves the library's count, the last out
/// restores it.
private final class ParallelRegions: @unchecked Sendable {
    var mutex = pthread_mutex_t()
    var depth = 0
    var savedThreads: Int32 = 1
    init() { pthread_mutex_init(&mutex, nil) }
    func enter() {
        pthread_mutex_lock(&mutex)
        if depth == 0 {
            savedThreads = openblas_get_num_threads()
            if savedThreads != 1 { openblas_set_num_threads(1) }
        }
        depth += 1
        pthread_mutex_unlock(&mutex)
    }
    func leave() {
        pthread_mutex_lock(&mutex)
        depth -= 1
        if depth == 0 && savedThreads != 1 { openblas_set_num_threads(savedThreads) }
        pthread_mutex_unlock(&mutex)
    }
}
private let regions = ParallelRegions()

/// Thin namespace over the CBLAS interface of OpenBLAS (row-major single precision only).
public enum Blas {
    /// Row-major y[M or N] = alpha · op(A) · x + beta · y through cblas_sgemv, A stored [M, lda]: `trans`
    /// gives y[N] = Aᵀ·x[M] (a row vector times a matrix), else y[M] = A·x[N]. One token's products at
    /// inference: sgemm with one row repacks the whole weight matrix on every call, sgemv reads it once.
    @inline(__always)
    public static func gemv(trans: Bool, M: Int, N: Int, alpha: Float, A: UnsafePointer<Float>, lda: Int,
                            x: UnsafePointer<Float>, beta: Float, y: UnsafeMutablePointer<Float>) {
        if M <= 0 || N <= 0 { return }
        precondition(M <= Int(Int32.max) && N <= Int(Int32.max), "gemv size exceeds 32-bit BLAS")
        cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int32(M), Int32(N), alpha, A, Int32(lda), x, 1, beta, y, 1)
    }

    /// Row-major C[M,N] = alpha * op(A)[M,K] · op(B)[K,N] + beta * C, through cblas_sgemm.
    ///
    /// `op(X)` is `Xᵀ` when the matching `trans` flag is set. Leading dimensions are row strides in
    /// elements of the matrices *as stored* (so `A` stored `[K, lda]` when `transA`), which lets callers
    /// address strided column blocks such as one attention head of a `[T, C]` buffer (`lda = C`).
    /// With `beta == 0`, `C` is overwritten and its prior contents (even NaN) are ignored.
    @inline(__always)
    public static func gemm(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                            A: UnsafePointer<Float>, lda: Int, B: UnsafePointer<Float>, ldb: Int,
                            beta: Float, C: UnsafeMutablePointer<Float>, ldc: Int) {
        // C[M,N]; A is [M,K] (or [K,M] if transA); B is [K,N] (or [N,K] if transB)
        if M <= 0 || N <= 0 { return }
        if K <= 0 {
            // Empty inner dimension: the product is zero, so C = beta * C (cblas may reject lda = 0).
            for i in 0 ..< M {
                let row = C + i * ldc
                if beta == 0 { for j in 0 ..< N { row[j] = 0 } } else { for j in 0 ..< N { row[j] *= beta } }
            }
            return
        }
        precondition(M <= Int(Int32.max) && N <= Int(Int32.max) && K <= Int(Int32.max), "gemm size exceeds 32-bit BLAS")
        cblas_sgemm(CblasRowMajor,
                    transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans,
                    blasint(M), blasint(N), blasint(K), alpha,
                    A, blasint(lda), B, blasint(ldb), beta, C, blasint(ldc))
    }

    /// The CPU kernel family OpenBLAS selected at load time (e.g. "Haswell"), from openblas_get_corename().
    public static var coreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    /// OpenBLAS's build description, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Prescott MAX_THREADS=64".
    public static var libraryConfig: String {
        guard let p = openblas_get_config() else { return "unknown" }
        return String(cString: p)
    }

    /// Whether this OpenBLAS can change its kernel set after loading (a DYNAMIC_ARCH build).
    public static var canSwitchKernels: Bool { copenblas_can_reselect() != 0 }

    /// Makes OpenBLAS choose its kernel set again as if `OPENBLAS_CORETYPE` were `name`, and returns the set
    /// now in use (OpenBLAS keeps its own choice for a name it does not have). Only with no product running:
    /// at start, before any rank thread exists, or in a benchmark between measurements.
    @discardableResult
    public static func switchKernels(to name: String) -> String {
        _ = copenblas_reselect(name)
        return coreName
    }

    /// The threads a rank works with (moe-dist's own: it splits large products and runs experts, attention
    /// heads and element-wise passes on them). Setting it leaves OpenBLAS itself at one thread: OpenBLAS's
    /// idle workers spin between the products they are given, and spun on the cores the rank's own threads
    /// needed (one rank ran 10-15% faster with the work split here and OpenBLAS single-threaded).
    public static var numThreads: Int {
        get { configuredThreads }
        set { configuredThreads = max(1, newValue); libraryThreads = 1 }
    }

    /// The threads OpenBLAS itself uses for one product (openblas_get/set_num_threads): 1 once `numThreads`
    /// is set; the benchmark raises it to measure the library's own threaded peak.
    public static var libraryThreads: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, newValue))) }
    }

    /// The thread count last chosen through `numThreads` (OpenBLAS's own default until then).
    nonisolated(unsafe) public static var configuredThreads: Int = Int(openblas_get_num_threads())

    /// Runs `body(w)` for w in 0 ..< workers on that many threads at once, with OpenBLAS at one thread
    /// meanwhile (each worker's products run single-threaded in the worker). With workers <= 1, runs body(0)
    /// in the caller and leaves OpenBLAS alone. The caller runs body(0); the others run on the calling
    /// thread's WorkerPool, whose threads are made once and reused (a region allocates nothing). A body that
    /// opens a region of its own on the caller's thread gets dispatch's threads instead.
    public static func parallel(workers: Int, _ body: (Int) -> Void) {
        if workers <= 1 { body(0); return }
        regions.enter()
        let pool = WorkerPool.forThisThread
        if pool.isBusy {
            DispatchQueue.concurrentPerform(iterations: workers) { w in body(w) }
        } else {
            pool.run(workers: workers, body)
        }
        regions.leave()
    }

    /// `gemm` on `workers` threads: C's rows (or, when C is wider than tall, its columns) cut into one
    /// contiguous slab per thread (near-equal multiples of 16), each a single-thread product. Every element
    /// is summed over K by one OpenBLAS kernel; OpenBLAS picks that kernel by the product's size, so a slab
    /// may round differently from the whole product in the last bits (the same inputs and threads always
    /// give the same bits). Products under 2²² multiply-adds stay on the caller.
    public static func parallelGemm(workers: Int, transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                                    A: UnsafePointer<Float>, lda: Int, B: UnsafePointer<Float>, ldb: Int,
                                    beta: Float, C: UnsafeMutablePointer<Float>, ldc: Int) {
        let byRows = M >= N
        let L = byRows ? M : N
        let W = min(workers, L / 16)
        if W <= 1 || M * N * K < 1 << 22 {
            gemm(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, A: A, lda: lda, B: B, ldb: ldb,
                 beta: beta, C: C, ldc: ldc)
            return
        }
        parallel(workers: W) { w in
            let r = share(w, of: W, items: L)
            let lo = r.lowerBound & ~15, hi = w == W - 1 ? L : r.upperBound & ~15
            guard hi > lo else { return }
            if byRows {   // rows lo..<hi of C and of op(A)
                gemm(transA: transA, transB: transB, M: hi - lo, N: N, K: K, alpha: alpha,
                     A: transA ? A + lo : A + lo * lda, lda: lda, B: B, ldb: ldb, beta: beta, C: C + lo * ldc, ldc: ldc)
            } else {      // columns lo..<hi of C and of op(B)
                gemm(transA: transA, transB: transB, M: M, N: hi - lo, K: K, alpha: alpha, A: A, lda: lda,
                     B: transB ? B + lo * ldb : B + lo, ldb: ldb, beta: beta, C: C + lo, ldc: ldc)
            }
        }
    }

    /// Runs `body(item)` for every item in 0 ..< count on up to `workers` threads (as `parallel`); each thread
    /// claims the next unclaimed item from `cursor` when it finishes one, so items of unequal cost balance as
    /// they run (give the costliest first). Which thread runs an item varies; callers make items independent.
    public static func parallel(workers: Int, claiming cursor: WorkCursor, items count: Int, _ body: (Int) -> Void) {
        let threads = min(workers, count)
        if threads <= 1 { for i in 0 ..< count { body(i) }; return }
        cursor.reset()
        parallel(workers: threads) { _ in
            while true {
                let i = cursor.claim()
                if i >= count { return }
                body(i)
            }
        }
    }

    /// Threads for an element-wise pass over n rows of C values: one per ~32k values (a parallel region costs
    /// microseconds), so small calls stay on the caller.
    @inline(__always)
    public static func rowWorkers(_ workers: Int, rows n: Int, width C: Int) -> Int { max(1, min(workers, n * C / 32768, n)) }

    /// body(rows) on contiguous shares of the rows 0 ..< n of an element-wise pass over n rows of C values,
    /// one share per thread of `rowWorkers` (on the caller when small).
    @inline(__always)
    public static func forEachShare(of n: Int, width C: Int, workers: Int, _ body: (Range<Int>) -> Void) {
        let W = rowWorkers(workers, rows: n, width: C)
        parallel(workers: W) { w in body(share(w, of: W, items: n)) }
    }

    /// Items [w·n/workers, (w+1)·n/workers) of worker w: contiguous, sizes differ by at most one.
    @inline(__always)
    public static func share(_ w: Int, of workers: Int, items n: Int) -> Range<Int> {
        (w * n / workers) ..< ((w + 1) * n / workers)
    }
}

/// The next item of a `Blas.parallel(workers:claiming:items:)` region: a counter under a mutex (a region claims
/// tens of items, so a lock costs nothing measurable). Allocated once by its owner and reused every step.
public final class WorkCursor: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var next = 0
    public init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func reset() { pthread_mutex_lock(&mutex); next = 0; pthread_mutex_unlock(&mutex) }
    func claim() -> Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        next += 1
        return next - 1
    }
}
