// COpenBLAS: the CBLAS interface of OpenBLAS plus its runtime queries.
#pragma once
#include <cblas.h>

// Declared by OpenBLAS (openblas_config.h / cblas.h) on most builds; restated so
// the shim compiles against any of Debian's OpenBLAS flavours.
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);
char *openblas_get_config(void);

// Kernel re-selection in a DYNAMIC_ARCH OpenBLAS (Debian's is one). The library picks its kernel
// set once, when it is loaded, from OPENBLAS_CORETYPE or its own CPU table; these two exported
// functions (driver/others/dynamic.c) drop that choice and make it again. Looked up with dlsym so
// that a single-target OpenBLAS, which lacks them, still links and loads.
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

static inline int copenblas_can_reselect(void) {
    return dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init") != NULL
        && dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit") != NULL;
}

/// Makes OpenBLAS choose its kernels again as if OPENBLAS_CORETYPE were `coretype` (restoring the
/// variable afterwards). Returns 0, or -1 without the entry points. Call with no BLAS call running.
/// An unknown name leaves OpenBLAS to its own choice: compare openblas_get_corename() afterwards.
static inline int copenblas_reselect(const char *coretype) {
    void (*quit)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit");
    void (*init)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init");
    if (quit == NULL || init == NULL) return -1;
    const char *old = getenv("OPENBLAS_CORETYPE");
    char *saved = old ? strdup(old) : NULL;
    setenv("OPENBLAS_CORETYPE", coretype, 1);
    quit();
    init();
    if (saved) { setenv("OPENBLAS_CORETYPE", saved, 1); free(saved); } else { unsetenv("OPENBLAS_CORETYPE"); }
    return 0;
}
