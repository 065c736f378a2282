// Expert placement: the step of an MoE use's plan (ExpertSlots) that decides which rank runs each expert and
// gives every slot its weights (forward) and the gradient it adds into (backward). OwnerPlacement runs every
// expert on the rank that holds it; a balancing placement may also run guests (experts a rank does not hold,
// their weights and gradients in transit). An MoE layer holds one placement, chosen in one line of
// MoELayer.init; a placement's memory terms (guest slots, scratch) reach the buffer tables through MicroBatchShape.

/// Where the experts of an MoE use run, and with which weights and gradients.
protocol ExpertPlacement: AnyObject {
    /// The most experts a plan has this rank run beyond the ones it holds (Experts keeps packs for them).
    var guestSlots: Int { get }
    /// Forward, after the count exchange: fills `plan` from the group's rows per expert (`rows` [E]) and
    /// the pool's weights. Collective over the expert group where experts move.
    func place(_ plan: ExpertSlots, rows: [Int], weights pool: PoolTensors)
    /// Backward, before the experts run: each slot of the forward's `plan` gets the gradient it adds into.
    func attachGradients(_ plan: ExpertSlots, weights pool: PoolTensors, grads: PoolTensors)
    /// Backward, after the experts ran: every slot's gradient ends in the pool's `grads`.
    func finishBackward(_ plan: ExpertSlots, grads: PoolTensors)
}

/// Every expert runs on its owner, with the pool's weights and gradients in place.
final class OwnerPlacement: ExpertPlacement {
    var guestSlots: Int { 0 }
    func place(_ plan: ExpertSlots, rows: [Int], weights pool: PoolTensors) { plan.placeOnOwners(weights: pool) }
    func attachGradients(_ plan: ExpertSlots, weights pool: PoolTensors, grads: PoolTensors) { plan.attachGradients(grads) }
    func finishBackward(_ plan: ExpertSlots, grads: PoolTensors) {}
}
