// The HDF5 library as a process-wide resource.
import Foundation

public enum HDF5Library {
    /// Serial HDF5 is not thread-safe: code that may run on several threads at once (ranks emulated as
    /// threads, --emulate-ranks) takes this lock around every use of the library.
    public static let lock = NSLock()
}
