// Kernels module (being written).
