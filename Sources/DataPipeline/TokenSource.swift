// A read-only sequence of token ids: a memory-mapped token file, an in-memory
// array, or the generated corpus. The training loader reads windows through it.

public protocol TokenSource: AnyObject {
    /// Number of tokens.
    var count: Int { get }
    /// Every id is in `0 ..< vocabSize`.
    var vocabSize: Int { get }
    /// Copies `tokens[range]` into `out` as Int32.
    func copyTokens(_ range: Range<Int>, into out: UnsafeMutablePointer<Int32>)
}
