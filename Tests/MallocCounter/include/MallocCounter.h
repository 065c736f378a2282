// Counts heap allocations (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign) made by any
// thread of the test process while counting is on. Linked into the test binary, these definitions
// take the place of the C library's for the whole process; each forwards to glibc's own allocator.
#pragma once
#include <stdint.h>

/// Resets the count to 0 and starts counting.
void malloc_counter_start(void);
/// Stops counting and returns the allocations counted since the last start.
int64_t malloc_counter_stop(void);
/// While `exclude` is nonzero, allocations of the calling thread are not counted (a test's own machinery,
/// such as an in-process world's collectives, called from the code under test).
void malloc_counter_exclude_this_thread(int exclude);
