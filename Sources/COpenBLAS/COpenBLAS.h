// COpenBLAS: the CBLAS interface of OpenBLAS plus its runtime queries.
#pragma once
#include <cblas.h>

// Declared by OpenBLAS (openblas_config.h / cblas.h) on most builds; restated so
// the shim compiles against any of Debian's OpenBLAS flavours.
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);
char *openblas_get_config(void);
