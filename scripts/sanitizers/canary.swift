// The canary of scripts/test_sanitizers.sh: one known defect per sanitizer, which must show up in its
// report logs (so that zero reports from moe-dist mean something).
//   canary overflow: writes one element past a heap allocation (Address Sanitizer)
//   canary race:     three threads add to one variable without a lock (Thread Sanitizer)
import Dispatch
import Foundation

switch CommandLine.arguments.dropFirst().first {
case "overflow":
    let p = UnsafeMutablePointer<Int>.allocate(capacity: 4)
    p[4] = 1
    print(p[0])
case "race":
    let p = UnsafeMutablePointer<Int>.allocate(capacity: 1)
    p.pointee = 0
    // Each iteration waits a little, so the three run on different threads at the same time.
    DispatchQueue.concurrentPerform(iterations: 3) { w in usleep(100_000); p.pointee += w }
    print(p.pointee)
default:
    print("usage: canary overflow|race")
    exit(2)
}
