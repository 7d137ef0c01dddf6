import HVCore
import HVTestSupport
import Testing
@testable import HVBoot

@Suite struct MPTableTests {
    @Test("the floating pointer and the table have valid checksums and point at each other", arguments: [1, 2, 8])
    func layout(vcpuCount: Int) throws {
        let table = try MPTable(vcpuCount: vcpuCount)
        let bytes = table.bytes
        #expect(Array(bytes[0..<4]) == Array("_MP_".utf8))
        #expect(bytes[0..<16].reduce(0, &+) == 0, "floating pointer checksum")
        #expect(bytes.littleEndian(UInt32.self, at: 4) == UInt32(MPTable.defaultAddress.rawValue) + 16)
        let config = Array(bytes[16...])
        #expect(Array(config[0..<4]) == Array("PCMP".utf8))
        let length = Int(config.littleEndian(UInt16.self, at: 4))
        #expect(length == config.count)
        #expect(config.reduce(0, &+) == 0, "table checksum")
        #expect(Int(config.littleEndian(UInt16.self, at: 34)) == vcpuCount + 1 + 1 + 16 + 2)
        #expect(config.littleEndian(UInt32.self, at: 36) == 0xFEE0_0000)
        // One processor entry per vCPU, with its APIC ID; only vCPU 0 is the BSP.
        for id in 0..<vcpuCount {
            let entry = 44 + id * 20
            #expect(config[entry] == 0)
            #expect(config[entry + 1] == UInt8(id))
            #expect(config[entry + 3] == (id == 0 ? 0x03 : 0x01))
        }
        // The I/O APIC after the bus entry, with the ID after the processors'.
        let ioAPIC = 44 + vcpuCount * 20 + 8
        #expect(config[ioAPIC] == 2)
        #expect(config[ioAPIC + 1] == UInt8(vcpuCount))
        #expect(config.littleEndian(UInt32.self, at: ioAPIC + 4) == 0xFEC0_0000)
    }

    @Test("bad processor counts and addresses are refused")
    func refusals() {
        for count in [0, -1, 255, 1000] {
            #expect(throws: LinuxBootError.self, "\(count) vCPUs") { try MPTable(vcpuCount: count) }
        }
        #expect(throws: LinuxBootError.self) { try MPTable(vcpuCount: 1, at: GuestAddress(0xFFFF_FF00)) }
    }

    /// Found by fuzz-boot-tables: an address within 1 KiB of the top of the address space made
    /// the range check itself overflow (a trap) instead of refusing it.
    @Test("an address at the top of the address space is refused, not overflowed", arguments: [UInt64.max, .max - 0x3FF, 0xFFFF_FFFF_FFFF_F000] as [UInt64])
    func addressNearTheTopIsRefused(address: UInt64) {
        #expect(throws: LinuxBootError.self) { try MPTable(vcpuCount: 1, at: GuestAddress(address)) }
    }
}
