// A token sequence held in memory: the generated corpus, test fixtures, small splits.

/// `TokenSource` over an `[Int32]` array.
public final class InMemoryTokens: TokenSource {
    /// The ids, every one in `0 ..< vocabSize`.
    public let tokens: [Int32]
    public let vocabSize: Int
    public var count: Int { tokens.count }

    /// Traps if an id is outside `0 ..< vocabSize`.
    public init(_ tokens: [Int32], vocabSize: Int) {
        precondition(vocabSize >= 1, "InMemoryTokens: vocabSize must be >= 1, got \(vocabSize)")
        if let bad = tokens.firstIndex(where: { $0 < 0 || Int($0) >= vocabSize }) {
            preconditionFailure("InMemoryTokens: token \(tokens[bad]) at \(bad) is outside 0 ..< \(vocabSize)")
        }
        self.tokens = tokens
        self.vocabSize = vocabSize
    }

    public func copyTokens(_ range: Range<Int>, into out: UnsafeMutablePointer<Int32>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= tokens.count,
                     "InMemoryTokens: range \(range) outside 0 ..< \(tokens.count)")
        tokens.withUnsafeBufferPointer { buf in
            out.update(from: buf.baseAddress! + range.lowerBound, count: range.count)
        }
    }
}
