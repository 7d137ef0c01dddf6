import Glibc
import HVCore
@testable import HVDevices
import HVDevicesTesting
import HVTestSupport
import Synchronization
import Testing

@Suite("SplitQueue: random and racing drivers")
struct SplitQueueRandomizedTests {
    /// Addresses a hostile driver likes: inside RAM, at the edges of the hole and of RAM, the
    /// read-only region, and near 2^64.
    static func hostileAddress(_ random: inout SeededGenerator) -> UInt64 {
        let picks: [UInt64] = [0x8000, 0xFFFF0, 0x10_0000, 0x1F_FFF0, 0x2F_FFF8, 0x40_0000, 0x1_0000_0000, .max - 8, .max]
        return Bool.random(using: &random) ? picks.randomElement(using: &random)! : UInt64.random(in: 0..<0x30_0000, using: &random)
    }

    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func randomRingsNeverYieldBuffersOutsideRAM(seed: UInt64) throws {
        let memory = try testMemory()
        var random = SeededGenerator(seed: seed)
        for _ in 0..<300 {
            var driver = try DriverQueue(memory: memory, size: 16)
            var queue = try driver.makeDeviceQueue(eventIndex: Bool.random(using: &random))
            // Random descriptors in the table and in an indirect table at 0xA000.
            for table in [driver.descriptorTable, GuestAddress(0xA000)] {
                for index in 0..<16 as Range<UInt16> {
                    let flags = UInt16.random(in: 0...7, using: &random)
                    let length = Bool.random(using: &random) ? UInt32.random(in: 0...64, using: &random) : UInt32.random(in: 0...UInt32.max, using: &random)
                    let address = Self.hostileAddress(&random)
                    try driver.writeDescriptor(index, Descriptor(address: address, length: length, flags: Descriptor.Flags(rawValue: flags), next: UInt16.random(in: 0...20, using: &random)), table: table)
                }
            }
            for _ in 0..<Int.random(in: 1...6, using: &random) { try driver.publish(UInt16.random(in: 0...17, using: &random)) }
            if Bool.random(using: &random) { try driver.setAvailableIndex(UInt16.random(in: 0...UInt16.max, using: &random)) }
            // Every pop either fails cleanly or yields only checked RAM; the loop always ends.
            var pops = 0
            while pops < 40 {
                pops += 1
                do {
                    guard let chain = try queue.popChain(in: memory) else { break }
                    for segment in chain.segments {
                        #expect(memory.isRAM(segment.address, length: UInt64(segment.length)))
                    }
                    try queue.addUsed(head: chain.head, length: 0, in: memory)
                } catch let VirtqueueError.invalidChain(refused) {
                    // Refused chains stay in flight until the device answers them.
                    try? queue.addUsed(head: refused.head, length: 0, in: memory)
                    continue
                } catch {
                    break
                }
            }
            #expect(pops < 40, "the device kept finding work in a ring of 16")
        }
    }

    @Test func aDriverRewritingTheRingsConcurrentlyCannotHurtTheHost() throws {
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 16)
        var queue = try driver.makeDeviceQueue()
        for _ in 0..<8 { try driver.addChain([(GuestAddress(0x8000), 512, false), (GuestAddress(0x9000), 512, true)]) }
        let stop = Atomic<Bool>(false)
        let table = driver.descriptorTable
        let scribbler = try HostThread(name: "scribbler") {
            var random = SeededGenerator(seed: 42)
            while !stop.load(ordering: .relaxed) {
                // Rewrite a random descriptor, avail entry or avail idx.
                let offset = UInt64.random(in: 0..<(16 * 16 + 6 + 32), using: &random) & ~1
                let value = UInt16.random(in: 0...UInt16.max, using: &random)
                try? memory.write(value, at: GuestAddress(table.rawValue + offset))
            }
        }
        defer {
            stop.store(true, ordering: .relaxed)
            scribbler.join()
        }
        var outcomes = (chains: 0, refused: 0, broken: 0)
        for _ in 0..<20_000 {
            do {
                if let chain = try queue.popChain(in: memory) {
                    var writer = chain.writer(in: memory)
                    _ = try? writer.write([UInt8](repeating: 0xAB, count: Int(min(writer.remaining, 64))))
                    try queue.addUsed(head: chain.head, length: UInt32(writer.bytesWritten), in: memory)
                    outcomes.chains += 1
                }
            } catch let VirtqueueError.invalidChain(refused) {
                outcomes.refused += 1
                try? queue.addUsed(head: refused.head, length: 0, in: memory)
            } catch {
                outcomes.broken += 1
                // A broken queue is reset and set up again, as a driver would after NEEDS_RESET.
                queue = try driver.makeDeviceQueue()
            }
        }
        // Nothing to assert beyond surviving: the counts show the race was real.
        #expect(outcomes.chains + outcomes.refused + outcomes.broken > 0)
    }
}
