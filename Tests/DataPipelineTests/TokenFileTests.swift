// Token file writer and reader: round trips at 2 and 4 bytes per token, header layout.
import DataPipeline
import Foundation
import XCTest

final class TokenFileTests: XCTestCase {
    func roundTrip(vocabSize: Int, ids: [Int32], expectBytesPerToken: Int) throws {
        let dir = try scratchDirectory(self)
        let path = dir.appendingPathComponent("t.tok").path
        let w = try TokenFileWriter(path: path, vocabSize: vocabSize)
        // Several appends, crossing the writer's 1 MB flush size.
        var i = 0
        while i < ids.count { let j = min(ids.count, i + 100_003); try w.append(Array(ids[i ..< j])); i = j }
        try w.finish()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["t.tok"], "no partial file left")

        let f = try TokenFile(path: path)
        XCTAssertEqual(f.count, ids.count)
        XCTAssertEqual(f.vocabSize, vocabSize)
        XCTAssertEqual(f.bytesPerToken, expectBytesPerToken)
        XCTAssertNoThrow(try f.validate())
        XCTAssertEqual(f.tokens(0 ..< f.count), ids)
        if ids.count > 10 {
            var out = [Int32](repeating: -1, count: 7)
            out.withUnsafeMutableBufferPointer { f.copyTokens(3 ..< 10, into: $0.baseAddress!) }
            XCTAssertEqual(out, Array(ids[3 ..< 10]))
        }
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        XCTAssertEqual(size, 64 + ids.count * expectBytesPerToken)
    }

    func testRoundTripTwoBytes() throws {
        var g = SystemRandomNumberGenerator()
        let ids = (0 ..< 700_000).map { _ in Int32.random(in: 0 ..< 65536, using: &g) }
        try roundTrip(vocabSize: 65536, ids: ids + [0, 65535], expectBytesPerToken: 2)
    }

    func testRoundTripFourBytes() throws {
        var g = SystemRandomNumberGenerator()
        let ids = (0 ..< 300_000).map { _ in Int32.random(in: 0 ..< 100_000, using: &g) }
        try roundTrip(vocabSize: 100_000, ids: ids + [65536, 99_999], expectBytesPerToken: 4)
    }

    func testEmptyFile() throws {
        try roundTrip(vocabSize: 50257, ids: [], expectBytesPerToken: 2)
    }

    func testHeaderLayout() throws {
        let dir = try scratchDirectory(self)
        let path = dir.appendingPathComponent("h.tok").path
        let w = try TokenFileWriter(path: path, vocabSize: 70000)
        try w.append([1, 2, 69999])
        try w.finish()
        let d = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(Array(d[0 ..< 8]), Array("MOETOKS1".utf8))
        XCTAssertEqual(Array(d[8 ..< 12]), [1, 0, 0, 0])
        XCTAssertEqual(Array(d[12 ..< 16]), [4, 0, 0, 0])
        XCTAssertEqual(Array(d[16 ..< 24]), [3, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(Array(d[24 ..< 28]), [0x70, 0x11, 1, 0])        // 70000
        XCTAssertEqual(Array(d[28 ..< 64]), [UInt8](repeating: 0, count: 36))
        XCTAssertEqual(Array(d[64...]), [1, 0, 0, 0, 2, 0, 0, 0, 0x6F, 0x11, 1, 0])
    }
}
