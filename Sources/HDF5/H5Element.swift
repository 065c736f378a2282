// H5Element: the Swift scalar types a dataset can hold, and their HDF5 types.
import CHDF5

/// An element type that datasets and array attributes store. Files always use
/// little-endian types (float32, float64, int64, int32); memory uses the native ones.
public protocol H5Element {
    static var h5Type: H5ElementType { get }
    init()
}

/// The element types the wrapper writes.
public enum H5ElementType: String, CustomStringConvertible {
    case float32, float64, int64, int32

    public var description: String { rawValue }
    public var byteSize: Int {
        switch self { case .float32, .int32: return 4; case .float64, .int64: return 8 }
    }
    var memoryType: hid_t {
        switch self {
        case .float32: return moe_h5_t_native_float()
        case .float64: return moe_h5_t_native_double()
        case .int64: return moe_h5_t_native_int64()
        case .int32: return moe_h5_t_native_int32()
        }
    }
    var fileType: hid_t {
        switch self {
        case .float32: return moe_h5_t_ieee_f32le()
        case .float64: return moe_h5_t_ieee_f64le()
        case .int64: return moe_h5_t_std_i64le()
        case .int32: return moe_h5_t_std_i32le()
        }
    }
}

extension Float: H5Element { public static var h5Type: H5ElementType { .float32 } }
extension Double: H5Element { public static var h5Type: H5ElementType { .float64 } }
extension Int64: H5Element { public static var h5Type: H5ElementType { .int64 } }
extension Int32: H5Element { public static var h5Type: H5ElementType { .int32 } }
