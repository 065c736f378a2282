// The tokenizer fingerprint (SPEC section 8) against FIPS 180-4 SHA-256 test vectors, and the token-file
// header field that carries it (bytes 28..<36, little-endian), written and read back.
import DataPipeline
import Foundation
import XCTest

final class FingerprintTests: XCTestCase {
    func testFirstEightBytesOfSHA256AsLittleEndian() {
        // FIPS 180-4 examples: SHA-256("abc") = ba7816bf 8f01cfea ..., the two-block message = 248d6a61 d20638b8 ...
        XCTAssertEqual(TokenizerFingerprint.of(Data("abc".utf8)), 0xeacf_018f_bf16_78ba)
        XCTAssertEqual(TokenizerFingerprint.of(Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       0xb838_06d2_616a_8d24)
        // SHA-256("") = e3b0c442 98fc1c14 ...; one million "a" = cdc76e5c 9914fb92 ...
        XCTAssertEqual(TokenizerFingerprint.of(Data()), 0x141c_fc98_42c4_b0e3)
        XCTAssertEqual(TokenizerFingerprint.of(Data(repeating: UInt8(ascii: "a"), count: 1_000_000)), 0x92fb_1499_5c6e_c7cd)
        XCTAssertEqual(TokenizerFingerprint.hex(0xeacf_018f_bf16_78ba), "eacf018fbf1678ba")
    }

    func testHeaderCarriesTheFingerprint() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fp-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("x.tok").path
        let w = try TokenFileWriter(path: path, vocabSize: 300, fingerprint: 0x0102_0304_0506_0708)
        try w.append([1, 2, 299])
        try w.finish()
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(bytes[28 ..< 36]), [8, 7, 6, 5, 4, 3, 2, 1])
        XCTAssertEqual(Array(bytes[36 ..< 64]), [UInt8](repeating: 0, count: 28))
        let f = try TokenFile(path: path)
        XCTAssertEqual(f.fingerprint, 0x0102_0304_0506_0708)
        XCTAssertEqual(f.tokens(0 ..< 3), [1, 2, 299])
    }
}
