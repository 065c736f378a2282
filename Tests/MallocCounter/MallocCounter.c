#include "MallocCounter.h"
#include <stdatomic.h>
#include <stddef.h>
#include <errno.h>
#include <execinfo.h>
#include <stdlib.h>
#include <unistd.h>

// glibc's allocator under its own names (exported by libc.so.6).
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

static atomic_int counting;
static atomic_llong allocations;

static atomic_int tracing;           // MALLOC_COUNTER_TRACE set: print a backtrace of each counted allocation
static _Thread_local int inTrace;
static _Thread_local int excluded;   // this thread's allocations are not counted (malloc_counter_exclude_this_thread)

static void trace(void) {
    if (inTrace) return;
    inTrace = 1;
    void *frames[24];
    int n = backtrace(frames, 24);
    backtrace_symbols_fd(frames, n, 2);
    static const char rule[] = "----\n";
    (void)!write(2, rule, sizeof rule - 1);
    inTrace = 0;
}

static inline void count_one(void) {
    if (atomic_load_explicit(&counting, memory_order_relaxed) && !inTrace && !excluded) {
        atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
        if (atomic_load_explicit(&tracing, memory_order_relaxed)) trace();
    }
}

#if defined(__has_feature)
#  if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#    define MALLOC_COUNTER_SANITIZED 1
#  endif
#endif

#ifdef MALLOC_COUNTER_SANITIZED
// A sanitizer owns malloc and friends (replacing them here would hand it memory it never allocated), so
// count through its allocator hook instead: called for every allocation its allocator makes.
extern int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                                     void (*free_hook)(const volatile void *));
static void on_malloc(const volatile void *ptr, size_t size) { (void)ptr; (void)size; count_one(); }
static void on_free(const volatile void *ptr) { (void)ptr; }
__attribute__((constructor)) static void install_hooks(void) {
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}
#else
void *malloc(size_t size) { count_one(); return __libc_malloc(size); }
void *calloc(size_t count, size_t size) { count_one(); return __libc_calloc(count, size); }
void *realloc(void *ptr, size_t size) { count_one(); return __libc_realloc(ptr, size); }
void *memalign(size_t alignment, size_t size) { count_one(); return __libc_memalign(alignment, size); }
void *aligned_alloc(size_t alignment, size_t size) { count_one(); return __libc_memalign(alignment, size); }
int posix_memalign(void **out, size_t alignment, size_t size) {
    count_one();
    void *p = __libc_memalign(alignment, size);
    if (p == NULL) return ENOMEM;
    *out = p;
    return 0;
}
#endif

void malloc_counter_start(void) {
    atomic_store(&tracing, getenv("MALLOC_COUNTER_TRACE") != NULL);
    atomic_store(&allocations, 0);
    atomic_store(&counting, 1);
}

int64_t malloc_counter_stop(void) {
    atomic_store(&counting, 0);
    return atomic_load(&allocations);
}

void malloc_counter_exclude_this_thread(int exclude) { excluded = exclude; }
