// CMPI: a thin shim over OpenMPI. OpenMPI's MPI_COMM_WORLD, datatypes and ops
// are macros Swift cannot import; the functions here wrap them.
#pragma once
#include <mpi.h>
