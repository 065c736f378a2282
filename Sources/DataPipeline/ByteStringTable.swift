// An open-addressing hash table that interns byte strings and numbers them
// 0, 1, 2, ... in insertion order. Used for pre-token counts (trainer) and the
// word cache (encoder): both look up millions of short byte strings, where a
// Swift Dictionary keyed by [UInt8] would allocate per lookup.

/// 64-bit hash of `n` bytes, eight at a time.
@inline(__always)
func hashBytes(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
    var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: n)
    let raw = UnsafeRawPointer(p)
    var i = 0
    while i + 8 <= n {
        h = (h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 32
        i += 8
    }
    var tail: UInt64 = 0, shift: UInt64 = 0
    while i < n { tail |= UInt64(p[i]) << shift; shift += 8; i += 1 }
    h = (h ^ tail) &* 0xC4CE_B9FE_1A85_EC53
    h ^= h >> 29
    h = h &* 0xFF51_AFD7_ED55_8CCD
    return h ^ (h >> 32)
}

final class ByteStringTable {
    /// Number of distinct strings.
    private(set) var count = 0
    private var slots: UnsafeMutablePointer<Int32>      // entry index, or -1
    private var slotHashes: UnsafeMutablePointer<UInt64>
    private var mask: Int
    private var starts: UnsafeMutablePointer<Int>        // per entry: offset in arena
    private var lengths: UnsafeMutablePointer<Int32>
    private var entryCapacity: Int
    private var arena: UnsafeMutablePointer<UInt8>
    private(set) var arenaCount = 0
    private var arenaCapacity: Int

    init(capacity: Int = 1 << 12) {
        var c = 16
        while c < capacity * 2 { c <<= 1 }
        mask = c - 1
        slots = .allocate(capacity: c); slots.initialize(repeating: -1, count: c)
        slotHashes = .allocate(capacity: c); slotHashes.initialize(repeating: 0, count: c)
        entryCapacity = c / 2
        starts = .allocate(capacity: entryCapacity)
        lengths = .allocate(capacity: entryCapacity)
        arenaCapacity = c * 8
        arena = .allocate(capacity: arenaCapacity)
    }

    deinit {
        slots.deallocate(); slotHashes.deallocate(); starts.deallocate(); lengths.deallocate(); arena.deallocate()
    }

    /// Bytes of all keys together (memory use).
    var keyBytes: Int { arenaCount }

    @inline(__always) func key(_ i: Int) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(start: arena + starts[i], count: Int(lengths[i]))
    }

    /// Index of the string, or -1.
    @inline(__always) func find(_ p: UnsafePointer<UInt8>, _ n: Int, hash h: UInt64) -> Int {
        var s = Int(truncatingIfNeeded: h) & mask
        while true {
            let e = slots[s]
            if e < 0 { return -1 }
            if slotHashes[s] == h && Int(lengths[Int(e)]) == n && memeq(arena + starts[Int(e)], p, n) { return Int(e) }
            s = (s + 1) & mask
        }
    }

    /// Index of the string, inserting it if absent; `inserted` tells which.
    @inline(__always) func findOrInsert(_ p: UnsafePointer<UInt8>, _ n: Int) -> (index: Int, inserted: Bool) {
        let h = hashBytes(p, n)
        var s = Int(truncatingIfNeeded: h) & mask
        while true {
            let e = slots[s]
            if e < 0 { break }
            if slotHashes[s] == h && Int(lengths[Int(e)]) == n && memeq(arena + starts[Int(e)], p, n) { return (Int(e), false) }
            s = (s + 1) & mask
        }
        return (insertNew(p, n, hash: h, slot: s), true)
    }

    private func insertNew(_ p: UnsafePointer<UInt8>, _ n: Int, hash h: UInt64, slot: Int) -> Int {
        if arenaCount + n > arenaCapacity {
            var c = arenaCapacity * 2
            while c < arenaCount + n { c *= 2 }
            let a = UnsafeMutablePointer<UInt8>.allocate(capacity: c)
            a.update(from: arena, count: arenaCount)
            arena.deallocate(); arena = a; arenaCapacity = c
        }
        (arena + arenaCount).update(from: p, count: n)
        let i = count
        starts[i] = arenaCount; lengths[i] = Int32(n)
        arenaCount += n
        slots[slot] = Int32(i); slotHashes[slot] = h
        count += 1
        if count >= entryCapacity { grow() }
        return i
    }

    private func grow() {
        let c = (mask + 1) * 2
        let newSlots = UnsafeMutablePointer<Int32>.allocate(capacity: c); newSlots.initialize(repeating: -1, count: c)
        let newHashes = UnsafeMutablePointer<UInt64>.allocate(capacity: c); newHashes.initialize(repeating: 0, count: c)
        let m = c - 1
        for s in 0 ... mask where slots[s] >= 0 {
            var t = Int(truncatingIfNeeded: slotHashes[s]) & m
            while newSlots[t] >= 0 { t = (t + 1) & m }
            newSlots[t] = slots[s]; newHashes[t] = slotHashes[s]
        }
        slots.deallocate(); slotHashes.deallocate()
        slots = newSlots; slotHashes = newHashes; mask = m
        let ec = c / 2
        let ns = UnsafeMutablePointer<Int>.allocate(capacity: ec); ns.update(from: starts, count: count)
        let nl = UnsafeMutablePointer<Int32>.allocate(capacity: ec); nl.update(from: lengths, count: count)
        starts.deallocate(); lengths.deallocate()
        starts = ns; lengths = nl; entryCapacity = ec
    }
}

@inline(__always) func memeq(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    var i = 0
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    while i + 8 <= n {
        if ra.loadUnaligned(fromByteOffset: i, as: UInt64.self) != rb.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
        i += 8
    }
    while i < n { if a[i] != b[i] { return false }; i += 1 }
    return true
}
