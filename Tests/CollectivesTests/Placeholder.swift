import XCTest
final class CollectivesTestsPlaceholder: XCTestCase { func testModuleBuilds() {} }
