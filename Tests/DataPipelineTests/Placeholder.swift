import XCTest
final class DataPipelineTestsPlaceholder: XCTestCase { func testModuleBuilds() {} }
