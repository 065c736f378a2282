// Agreement across ranks: a condition one rank sees (a signal, a failed write, rank 0's decision)
// becomes the same answer on every rank, so all of them take the same branch and the next
// collective matches. Every rank must call it at the same point, like any collective.

extension Communicator {
    /// True on every rank when `condition` is true on at least one rank.
    public func anyRank(_ condition: Bool) -> Bool {
        var flag = [condition ? 1.0 : 0.0]
        flag.withUnsafeMutableBufferPointer { allReduceMax($0) }
        return flag[0] > 0
    }
}
