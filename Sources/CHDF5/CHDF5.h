// CHDF5: the HDF5 C API plus inline functions for the constants that HDF5
// defines as macros (Swift cannot import them), and a helper that renders the
// HDF5 error stack as one line of text.
#pragma once
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

// MARK: Library initialisation and error reporting

/// Initialises the library and turns off HDF5's automatic printing of error
/// stacks to stderr (the Swift wrapper reports errors by throwing instead).
static inline int moe_h5_init_quiet(void) {
    /* No library shutdown at exit: every file is closed explicitly, and HDF5's exit handler crashed
       (H5D_close, null pointer) on the datasets of a file whose close had failed on a full disk. */
    H5dont_atexit();
    if (H5open() < 0) return -1;
    return H5Eset_auto2(H5E_DEFAULT, NULL, NULL) < 0 ? -1 : 0;
}

typedef struct {
    char *buf;
    size_t cap;
    size_t len;
    unsigned count;
} moe_h5_message_buffer;

static inline herr_t moe_h5_error_walk(unsigned n, const H5E_error2_t *err, void *data) {
    (void)n;
    moe_h5_message_buffer *b = (moe_h5_message_buffer *)data;
    if (err == NULL || err->desc == NULL || err->desc[0] == '\0') return 0;
    if (b->count >= 4 || b->len + 1 >= b->cap) return 0;  // the innermost few frames say enough
    int w = snprintf(b->buf + b->len, b->cap - b->len, "%s%s", b->count ? "; " : "", err->desc);
    if (w > 0) b->len = (b->len + (size_t)w < b->cap) ? b->len + (size_t)w : b->cap - 1;
    b->count += 1;
    return 0;
}

/// Writes the descriptions on the current thread's HDF5 error stack (the most
/// specific, innermost frame first, at most four, "; "-separated, NUL-terminated)
/// into `buf`, then clears the stack.
static inline void moe_h5_error_stack_description(char *buf, size_t cap) {
    if (buf == NULL || cap == 0) return;
    buf[0] = '\0';
    moe_h5_message_buffer b = { buf, cap, 0, 0 };
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, moe_h5_error_walk, &b);
    H5Eclear2(H5E_DEFAULT);
}

// MARK: Property lists and special identifiers

static inline hid_t moe_h5_p_default(void) { return H5P_DEFAULT; }
static inline hid_t moe_h5_p_file_access(void) { return H5P_FILE_ACCESS; }
static inline hid_t moe_h5_p_file_create(void) { return H5P_FILE_CREATE; }
static inline hid_t moe_h5_p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t moe_h5_p_dataset_access(void) { return H5P_DATASET_ACCESS; }
static inline hid_t moe_h5_p_link_create(void) { return H5P_LINK_CREATE; }
static inline hid_t moe_h5_e_default(void) { return H5E_DEFAULT; }
static inline hid_t moe_h5_s_all(void) { return H5S_ALL; }
static inline hsize_t moe_h5_s_unlimited(void) { return H5S_UNLIMITED; }
static inline size_t moe_h5_t_variable(void) { return H5T_VARIABLE; }
static inline H5Z_filter_t moe_h5_z_filter_fletcher32(void) { return H5Z_FILTER_FLETCHER32; }

// MARK: File access flags

static inline unsigned moe_h5_f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned moe_h5_f_acc_rdwr(void) { return H5F_ACC_RDWR; }
static inline unsigned moe_h5_f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline unsigned moe_h5_f_acc_excl(void) { return H5F_ACC_EXCL; }
static inline unsigned moe_h5_f_acc_swmr_write(void) { return H5F_ACC_SWMR_WRITE; }
static inline unsigned moe_h5_f_acc_swmr_read(void) { return H5F_ACC_SWMR_READ; }

// MARK: Predefined datatypes

static inline hid_t moe_h5_t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t moe_h5_t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t moe_h5_t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t moe_h5_t_native_int32(void) { return H5T_NATIVE_INT32; }
static inline hid_t moe_h5_t_native_uint8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t moe_h5_t_c_s1(void) { return H5T_C_S1; }
/// Little-endian IEEE / two's-complement file types, so files are the same on every host.
static inline hid_t moe_h5_t_ieee_f32le(void) { return H5T_IEEE_F32LE; }
static inline hid_t moe_h5_t_ieee_f64le(void) { return H5T_IEEE_F64LE; }
static inline hid_t moe_h5_t_std_i64le(void) { return H5T_STD_I64LE; }
static inline hid_t moe_h5_t_std_i32le(void) { return H5T_STD_I32LE; }
static inline hid_t moe_h5_t_std_u8le(void) { return H5T_STD_U8LE; }
