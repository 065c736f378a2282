// A growable scratch buffer: allocated once and reused every step, so the
// training step does not allocate once sizes have settled.

/// Any Buffer, for counting what the model allocates.
public protocol AllocatedBuffer: AnyObject {
    /// Bytes held (capacity · stride).
    var allocatedBytes: Int { get }
}

public final class Buffer<Element>: AllocatedBuffer {
    public var allocatedBytes: Int { capacity * MemoryLayout<Element>.stride }
    public private(set) var pointer: UnsafeMutablePointer<Element>
    public private(set) var capacity: Int
    private let fill: Element

    public init(_ count: Int = 0, fill: Element) {
        self.fill = fill
        capacity = max(count, 1)
        pointer = .allocate(capacity: capacity)
        pointer.initialize(repeating: fill, count: capacity)
    }
    deinit { pointer.deallocate() }

    /// Makes room for `count` elements (contents are not preserved when it grows) and returns the pointer.
    @discardableResult
    public func ensure(_ count: Int) -> UnsafeMutablePointer<Element> {
        if count > capacity {
            pointer.deallocate()
            capacity = max(count, capacity * 3 / 2)
            pointer = .allocate(capacity: capacity)
            pointer.initialize(repeating: fill, count: capacity)
        }
        return pointer
    }
    /// `ensure(count)` and set the first `count` elements to the fill value.
    @discardableResult
    public func zeroed(_ count: Int) -> UnsafeMutablePointer<Element> {
        ensure(count).update(repeating: fill, count: count)
        return pointer
    }
}

public typealias FloatBuffer = Buffer<Float>
extension Buffer where Element == Float { public convenience init(_ count: Int = 0) { self.init(count, fill: 0) } }
extension Buffer where Element == Int32 { public convenience init(_ count: Int = 0) { self.init(count, fill: 0) } }
extension Buffer where Element == Int { public convenience init(_ count: Int = 0) { self.init(count, fill: 0) } }
extension Buffer where Element == Double { public convenience init(_ count: Int = 0) { self.init(count, fill: 0) } }
extension Buffer where Element == Int64 { public convenience init(_ count: Int = 0) { self.init(count, fill: 0) } }
