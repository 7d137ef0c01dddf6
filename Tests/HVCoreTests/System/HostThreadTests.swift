import Synchronization
import SystemPackage
import Testing
@testable import HVCore

@Suite("HostThread")
struct HostThreadTests {
    @Test("a thread runs its body and is joined")
    func runsAndJoins() throws {
        let ran = Atomic<Bool>(false)
        let thread = try HostThread(name: "test-thread") { ran.store(true, ordering: .relaxed) }
        thread.join()
        let didRun = ran.load(ordering: .relaxed)
        #expect(didRun)
    }

    @Test("a thread can pin itself to one CPU and reads its affinity back")
    func pinsItself() throws {
        let available = try HostThread.currentAffinity()
        #expect(!available.isEmpty)
        let target = try #require(available.last)
        let seen = Locked<(affinity: [Int], cpu: Int?)?>(nil)
        let thread = try HostThread(name: "test-pin") {
            do throws(Errno) {
                try HostThread.pinCurrentThread(to: [target])
                let affinity = try HostThread.currentAffinity()
                seen.withLock { $0 = (affinity, HostThread.currentCPU) }
            } catch {
                seen.withLock { $0 = ([], nil) }
            }
        }
        thread.join()
        let result = try #require(seen.withLock { $0 })
        #expect(result.affinity == [target])
        #expect(result.cpu == target)
        // The pin was the other thread's alone.
        #expect(try HostThread.currentAffinity() == available)
    }

    @Test("pinning to nothing, a negative CPU or one far beyond the host is refused")
    func refusesBadCPUSets() {
        #expect(throws: Errno.invalidArgument) { try HostThread.pinCurrentThread(to: []) }
        #expect(throws: Errno.invalidArgument) { try HostThread.pinCurrentThread(to: [-1]) }
        #expect(throws: Errno.invalidArgument) { try HostThread.pinCurrentThread(to: [1 << 40]) }
        #expect(throws: Errno.invalidArgument) { try HostThread.pinCurrentThread(to: [100_000]) }
    }
}
