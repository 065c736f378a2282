// See include/CSwiftClosure.h.
#include "CSwiftClosure.h"

#if !__has_attribute(swiftcall)
#error "CSwiftClosure needs clang's swiftcall calling convention"
#endif

#define SWIFTCALL __attribute__((swiftcall))

// Swift calls this as `csc_capture(_ body: (Int) -> Void, _ out: UnsafeMutablePointer<csc_int_closure>)`:
// the closure argument arrives as its two words.
SWIFTCALL void csc_capture(void *function, void *context, csc_int_closure *out) {
    out->function = function;
    out->context = context;
}

// A Swift `(Int) -> Void`: the argument, then the context (swiftself).
typedef SWIFTCALL void (*swift_int_function)(long argument, void *__attribute__((swift_context)) context);

void csc_call(csc_int_closure closure, long argument) {
    ((swift_int_function)closure.function)(argument, closure.context);
}
