// CHDF5: the HDF5 C API plus inline functions for the constants that HDF5
// defines as macros (Swift cannot import them).
#pragma once
#include <hdf5.h>
