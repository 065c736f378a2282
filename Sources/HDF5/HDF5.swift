// HDF5 module (being written).
