// CCPUFeatures: the x86-64 CPUID and XGETBV instructions, for choosing BLAS kernels.
// Header-only (static inline); on other architectures every query reports nothing.
#pragma once
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/// Registers of CPUID leaf `leaf`, sub-leaf `subleaf`; 0 when the leaf is beyond the CPU's maximum.
static inline int ccpu_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4]) {
    unsigned int a = 0, b = 0, c = 0, d = 0;
    int ok = __get_cpuid_count(leaf, subleaf, &a, &b, &c, &d);
    regs[0] = a; regs[1] = b; regs[2] = c; regs[3] = d;
    return ok;
}

/// XCR0: which register states the operating system saves (bits 1-2 SSE/AVX, 5-7 AVX-512).
static inline uint64_t ccpu_xcr0(void) {
    uint32_t regs[4];
    if (!ccpu_cpuid(1, 0, regs) || !(regs[2] & (1u << 27))) return 0;   // no OSXSAVE
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
static inline int ccpu_is_x86(void) { return 1; }
#else
static inline int ccpu_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4]) {
    (void)leaf; (void)subleaf; regs[0] = regs[1] = regs[2] = regs[3] = 0; return 0;
}
static inline uint64_t ccpu_xcr0(void) { return 0; }
static inline int ccpu_is_x86(void) { return 0; }
#endif
