// CSwiftClosure: a non-escaping Swift closure `(Int) -> Void` held as its two words (function and context) and
// called from another thread, with no allocation. Blas.parallel's WorkerPool hands its region's body to its
// threads this way; Swift's own way, withoutActuallyEscaping, allocates a box on every call.
//
// Swift passes a closure argument as two words, the function and its context, and calls the function with
// the context in the swiftself register; clang speaks that convention as swiftcall / swift_context. A
// non-escaping closure's context is not reference counted, so the two words may be copied freely; calling
// them is valid only while the call that received the closure is still running.
#ifndef CSWIFTCLOSURE_H
#define CSWIFTCLOSURE_H

typedef struct {
    void *function;
    void *context;
} csc_int_closure;

/// Calls the closure with `argument` (a Swift Int).
void csc_call(csc_int_closure closure, long argument);

// Also defined in CSwiftClosure.c and declared in Swift (WorkerPool.swift) with @_silgen_name, as
// `func(_ body: (Int) -> Void, _ out: UnsafeMutablePointer<csc_int_closure>)`: stores the words of `body`.
// void csc_capture(void *function, void *context, csc_int_closure *out)  [swiftcall]

#endif
