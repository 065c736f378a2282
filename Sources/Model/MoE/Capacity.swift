// The capacity limit of an MoE layer (SPEC section 3): pure functions, no communication.
// Each expert keeps its first C assignments in the order (slot j, then global token index); the ranks'
// tokens follow each other in rank order, so one rank decides its own assignments from the global
// per-(slot, expert) counts and the counts of the ranks before it.

/// Expert capacity C = ceil(c · k · N / E) for capacity factor c > 0 over the N tokens of the global
/// micro-batch (Megatron-Core's `get_capacity`).
func expertCapacity(factor c: Double, tokens N: Int, topK k: Int, experts E: Int) -> Int {
    Int((c * Double(k) * Double(N) / Double(E)).rounded(.up))
}

/// The keep mask of this rank's N·k assignments: keep[t·k + j] = 1 when the assignment of token t to
/// expert selected[t·k + j] is among that expert's first C in the order (slot j, global token index), else 0.
///
/// - slotCounts [k, E]: assignments per (slot, expert) over the global micro-batch.
/// - slotCountsBefore [k, E]: the same counts over the ranks before this one.
/// - cursor [k, E]: scratch.
/// Returns the assignments dropped over the whole global micro-batch, Σ_e max(0, count_e − C).
@discardableResult
func capacityKeepMask(_ keep: UnsafeMutablePointer<Int32>, selected: UnsafePointer<Int32>, N: Int, k: Int, E: Int,
                      capacity C: Int, slotCounts: UnsafePointer<Int>, slotCountsBefore: UnsafePointer<Int>,
                      cursor: UnsafeMutablePointer<Int>) -> Int {
    // keep is (N,k), selected is (N,k), slotCounts, slotCountsBefore and cursor are (k,E)
    var dropped = 0
    for e in 0 ..< E {
        var earlierSlots = 0        // assignments to e in slots before j, all ranks
        for j in 0 ..< k {
            cursor[j * E + e] = earlierSlots + slotCountsBefore[j * E + e]
            earlierSlots += slotCounts[j * E + e]
        }
        dropped += max(0, earlierSlots - C)
    }
    for j in 0 ..< k {              // slot-major, then token order
        for t in 0 ..< N {
            let slot = j * E + Int(selected[t * k + j])
            keep[t * k + j] = cursor[slot] < C ? 1 : 0
            cursor[slot] += 1
        }
    }
    return dropped
}
