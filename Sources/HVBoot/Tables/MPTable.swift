import HVCore

/// An Intel MultiProcessor Specification 1.4 table, so that a guest (Linux without ACPI) finds
/// its vCPUs, the I/O APIC and how the ISA interrupts are wired: the floating pointer
/// ("_MP_") and the configuration table ("PCMP") with one processor entry per vCPU, an ISA
/// bus, the in-kernel I/O APIC, IRQs 0-15 routed to its pins 0-15, and ExtINT and NMI on the
/// local APICs' LINT0 and LINT1.
public struct MPTable: Sendable, Hashable {
    /// Where Linux looks first: the last KiB of base memory (0x9FC00), which the e820 map
    /// leaves out of RAM.
    public static let defaultAddress = GuestAddress(0x9_FC00)
    /// Where the table says the I/O APIC is (KVM's in-kernel one).
    public static let ioAPICAddress: UInt32 = 0xFEC0_0000
    /// Where the table says each local APIC is.
    public static let localAPICAddress: UInt32 = 0xFEE0_0000
    static let isaInterrupts = 16

    /// The processors the table lists.
    public let vcpuCount: Int
    /// The bytes to write at the table's address: the floating pointer, then the table.
    public let bytes: [UInt8]

    /// - Parameters:
    ///   - vcpuCount: the processors to list, 1 to 254.
    ///   - address: where the bytes will be written (the floating pointer records the
    ///     configuration table's address, right after it).
    public init(vcpuCount: Int, at address: GuestAddress = MPTable.defaultAddress) throws(LinuxBootError) {
        guard (1...254).contains(vcpuCount) else {
            throw .badField(name: "the MP table's processor count", value: UInt64(max(0, vcpuCount)), reason: "1 to 254 (APIC IDs below the I/O APIC's)")
        }
        guard address.rawValue <= UInt64(UInt32.max) - 0x400 else {
            throw .badField(name: "the MP table's address", value: address.rawValue, reason: "must lie below 4 GiB")
        }
        self.vcpuCount = vcpuCount
        let tableAddress = UInt32(address.rawValue) + 16
        let ioAPICID = UInt8(vcpuCount)

        var entries: [UInt8] = []
        for id in 0..<vcpuCount {
            var processor = [UInt8](repeating: 0, count: 20)
            processor[0] = 0  // processor entry
            processor[1] = UInt8(id)  // local APIC ID
            processor[2] = 0x14  // local APIC version
            processor[3] = 0x01 | (id == 0 ? 0x02 : 0)  // enabled, bootstrap processor
            processor.setLittleEndian(UInt32(0x600), at: 4)  // CPU signature: family 6
            processor.setLittleEndian(UInt32(0x201), at: 8)  // features: FPU, APIC
            entries += processor
        }
        entries += [1, 0] + Array("ISA   ".utf8)  // bus 0: ISA
        var ioAPIC: [UInt8] = [2, ioAPICID, 0x11, 0x01]  // I/O APIC, version 0x11, enabled
        ioAPIC += [UInt8](repeating: 0, count: 4)
        ioAPIC.setLittleEndian(Self.ioAPICAddress, at: 4)
        entries += ioAPIC
        for irq in 0..<Self.isaInterrupts {
            // I/O interrupt: INT type, conforming polarity and trigger, ISA bus IRQ -> pin.
            entries += [3, 0, 0, 0, 0, UInt8(irq), ioAPICID, UInt8(irq)]
        }
        // Local interrupts to every local APIC (0xFF): ExtINT on LINT0, NMI on LINT1.
        entries += [4, 3, 0, 0, 0, 0, 0xFF, 0]
        entries += [4, 1, 0, 0, 0, 0, 0xFF, 1]
        let entryCount = vcpuCount + 1 + 1 + Self.isaInterrupts + 2

        var table = [UInt8](repeating: 0, count: 44)
        table.replaceSubrange(0..<4, with: Array("PCMP".utf8))
        table.setLittleEndian(UInt16(44 + entries.count), at: 4)  // base table length
        table[6] = 4  // specification 1.4
        table.replaceSubrange(8..<16, with: Array("HVKIT   ".utf8))  // OEM ID
        table.replaceSubrange(16..<28, with: Array("MICROVM     ".utf8))  // product ID
        table.setLittleEndian(UInt16(entryCount), at: 34)
        table.setLittleEndian(Self.localAPICAddress, at: 36)
        table += entries
        table[7] = byteChecksum(table)

        var pointer = [UInt8](repeating: 0, count: 16)
        pointer.replaceSubrange(0..<4, with: Array("_MP_".utf8))
        pointer.setLittleEndian(tableAddress, at: 4)
        pointer[8] = 1  // length in 16-byte units
        pointer[9] = 4  // specification 1.4
        pointer[10] = byteChecksum(pointer)  // feature bytes stay 0: the table is present
        bytes = pointer + table
    }

    /// Writes the table at `address` in `memory`.
    public func write(to memory: some GuestMemory, at address: GuestAddress = MPTable.defaultAddress) throws(LinuxBootError) {
        do { try memory.write(bytes, to: address) } catch { throw .guestMemory(error) }
    }
}
