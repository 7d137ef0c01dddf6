import HVCore
import HVTestSupport
import Testing
@testable import HVBoot

@Suite struct ACPITablesTests {
    /// The table at `address` in the block: its signature, and its whole bytes by its length.
    func table(in tables: ACPITables, at address: UInt64) -> (signature: String, bytes: [UInt8]) {
        let start = Int(address - tables.address.rawValue)
        let length = Int(tables.bytes.littleEndian(UInt32.self, at: start + 4))
        let bytes = Array(tables.bytes[start..<(start + length)])
        return (String(decoding: bytes[0..<4], as: UTF8.self), bytes)
    }

    @Test("every table checks out and the RSDP leads to the FADT, MADT and DSDT")
    func layout() throws {
        let devices = [ACPITables.VirtioMMIORecord(base: 0xD000_0000, interrupt: 5), ACPITables.VirtioMMIORecord(base: 0xD000_1000, interrupt: 6)]
        let tables = try ACPITables(vcpuCount: 3, virtioDevices: devices)
        let bytes = tables.bytes
        #expect(Array(bytes[0..<8]) == Array("RSD PTR ".utf8))
        #expect(bytes[0..<20].reduce(0, &+) == 0, "RSDP checksum")
        #expect(bytes[0..<36].reduce(0, &+) == 0, "RSDP extended checksum")
        let xsdt = table(in: tables, at: bytes.littleEndian(UInt64.self, at: 24))
        #expect(xsdt.signature == "XSDT")
        #expect(xsdt.bytes.reduce(0, &+) == 0)
        let pointers = (0..<2).map { xsdt.bytes.littleEndian(UInt64.self, at: 36 + 8 * $0) }
        let fadt = table(in: tables, at: pointers[0])
        let madt = table(in: tables, at: pointers[1])
        #expect(fadt.signature == "FACP" && fadt.bytes.count == 276)
        #expect(fadt.bytes.reduce(0, &+) == 0)
        #expect(fadt.bytes.littleEndian(UInt32.self, at: 112) & (1 << 20) != 0, "HW_REDUCED_ACPI")
        #expect(madt.signature == "APIC")
        #expect(madt.bytes.reduce(0, &+) == 0)
        // Three local APICs and an I/O APIC.
        #expect(madt.bytes.count == 44 + 3 * 8 + 12)
        let dsdt = table(in: tables, at: fadt.bytes.littleEndian(UInt64.self, at: 140))
        #expect(dsdt.signature == "DSDT")
        #expect(dsdt.bytes.reduce(0, &+) == 0)
        #expect(UInt64(fadt.bytes.littleEndian(UInt32.self, at: 40)) == fadt.bytes.littleEndian(UInt64.self, at: 140))
        // Both devices are declared, with their registers.
        let text = dsdt.bytes
        #expect(text.indices(of: Array("LNRO0005".utf8)).count == 2)
        #expect(text.indices(of: [0x86, 9, 0, 1, 0x00, 0x10, 0x00, 0xD0]).count == 1)
    }

    @Test("package lengths use one byte up to 63 and more beyond")
    func packageLengths() {
        #expect(AML.packageLength(10) == [11])
        #expect(AML.packageLength(62) == [63])
        #expect(AML.packageLength(63) == [0x40 | 1, 4])  // 65 = 0x41
        // 2000 + 1 + 1 = 2002 fits 12 bits: one extra byte.
        #expect(AML.packageLength(2000) == [0x40 | UInt8(2002 & 0xF), UInt8(2002 >> 4)])
        // 5000 + 1 + 2 = 5003 needs two extra bytes.
        #expect(AML.packageLength(5000) == [0x80 | UInt8(5003 & 0xF), UInt8((5003 >> 4) & 0xFF), UInt8(5003 >> 12)])
    }

    @Test("bad processor counts, addresses and devices are refused")
    func refusals() {
        #expect(throws: LinuxBootError.self) { try ACPITables(vcpuCount: 0) }
        #expect(throws: LinuxBootError.self) { try ACPITables(vcpuCount: 255) }
        #expect(throws: LinuxBootError.self) { try ACPITables(vcpuCount: 1, at: GuestAddress(0xE_0001)) }
        #expect(throws: LinuxBootError.self) {
            try ACPITables(vcpuCount: 1, virtioDevices: [ACPITables.VirtioMMIORecord(base: 0xFFFF_FFFF, interrupt: 5)])
        }
    }
}

extension Array where Element == UInt8 {
    /// Where `pattern` starts in the array.
    func indices(of pattern: [UInt8]) -> [Int] {
        guard pattern.count <= count else { return [] }
        return (0...(count - pattern.count)).filter { Array(self[$0..<($0 + pattern.count)]) == pattern }
    }
}
