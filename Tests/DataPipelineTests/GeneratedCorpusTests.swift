// The generated corpus: deterministic, ids in range, and far more predictable from
// context (entropy rate ≈ 1.13 nats) than from frequencies alone (≈ ln V).
@testable import DataPipeline
import Foundation
import TestSupport
import XCTest

final class GeneratedCorpusTests: XCTestCase {
    func testDeterministicAndSeeded() {
        let a = GeneratedCorpus.make(vocabSize: 256, tokens: 5000, seed: 7)
        let b = GeneratedCorpus.make(vocabSize: 256, tokens: 5000, seed: 7)
        XCTAssertEqual(a.tokens, b.tokens, "same seed, same tokens")
        XCTAssertNotEqual(a.tokens, GeneratedCorpus.make(vocabSize: 256, tokens: 5000, seed: 8).tokens)
        XCTAssertNotEqual(a.tokens, GeneratedCorpus.make(vocabSize: 256, tokens: 5000, seed: 7, stream: 1).tokens,
                          "the validation stream is another sample path")
        XCTAssertEqual(Array(a.tokens.prefix(1000)), GeneratedCorpus.make(vocabSize: 256, tokens: 1000, seed: 7).tokens,
                       "a shorter corpus is a prefix of a longer one")
    }

    func testIdsInRangeAndEveryTokenUsed() {
        for v in [4, 256, 8192] {
            let c = GeneratedCorpus.make(vocabSize: v, tokens: 20 * v, seed: 1)
            XCTAssertEqual(c.count, 20 * v)
            XCTAssertEqual(c.vocabSize, v)
            XCTAssertTrue(c.tokens.allSatisfy { $0 >= 0 && Int($0) < v }, "vocab \(v)")
        }
        let c = GeneratedCorpus.make(tokens: 100_000, seed: 3)
        XCTAssertEqual(Set(c.tokens).count, 256, "the chain visits the whole vocabulary")
    }

    /// Unigram ≈ ln 256; bigram ≈ ln 4 at best; order-2 (the true order) = the exact entropy rate.
    func testEntropyGap() {
        let c = GeneratedCorpus.make(vocabSize: 256, tokens: 400_000, seed: 1234)
        let h0 = GeneratedCorpus.unigramEntropy(c)
        let h1 = GeneratedCorpus.conditionalEntropy(c, order: 1)
        let h2 = GeneratedCorpus.conditionalEntropy(c, order: 2)
        let rate = GeneratedCorpus.entropyRate
        assertClose(rate, 1.13187, rtol: 0, atol: 1e-5, "H(0.55, 0.25, 0.12, 0.08)")
        XCTAssertGreaterThan(h0, 5.2, "unigram entropy near ln 256 = 5.55")
        XCTAssertLessThanOrEqual(h0, log(256.0) + 1e-9)
        XCTAssertGreaterThan(h0 - rate, 4.0, "a model that uses context can beat unigram by > 4 nats")
        XCTAssertLessThan(h1, log(4.0) + 1e-9, "bigram level at most ln K")
        XCTAssertGreaterThan(h1, rate + 0.1, "the token two back carries information")
        // ~1000 reachable contexts × ~400 visits: plug-in bias (K−1)/(2n) ≈ 0.004.
        print("generated corpus V=256: unigram \(h0), bigram \(h1), order-2 \(h2), entropy rate \(rate) nats")
        assertClose(h2, rate, rtol: 0, atol: 0.02, "order-2 plug-in estimate vs exact entropy rate")
    }

    func testInMemoryTokensCopies() {
        let t = InMemoryTokens([3, 1, 4, 1, 5, 9, 2, 6], vocabSize: 10)
        var out = [Int32](repeating: -1, count: 3)
        out.withUnsafeMutableBufferPointer { t.copyTokens(2 ..< 5, into: $0.baseAddress!) }
        XCTAssertEqual(out, [4, 1, 5])
        XCTAssertEqual(t.count, 8)
        XCTAssertEqual(t.vocabSize, 10)
    }
}
