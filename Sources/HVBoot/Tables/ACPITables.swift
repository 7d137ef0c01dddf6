import HVCore

/// A minimal, hardware-reduced ACPI description for kernels that learn their machine only
/// from ACPI (Debian's cloud kernel reads neither an MP table nor virtio_mmio.device=): the
/// RSDP, an XSDT, a FADT (HW_REDUCED_ACPI, so no PM timer, SCI or sleep registers are
/// needed), a MADT with one local APIC per vCPU and the I/O APIC, and a DSDT that declares
/// each virtio-mmio device (LNRO0005) with its registers and interrupt.
///
/// All tables sit in one block at ``defaultAddress`` (the BIOS area a legacy scan reads); the
/// zero page's acpi_rsdp_addr points at the RSDP as well.
public struct ACPITables: Sendable, Hashable {
    /// A virtio-mmio device to declare.
    public struct VirtioMMIORecord: Sendable, Hashable {
        /// The first byte of the device's MMIO window.
        public var base: UInt64
        /// The window's size in bytes.
        public var length: UInt32
        /// The GSI the device interrupts on (an I/O APIC pin).
        public var interrupt: UInt32
        /// A device at `base` with a window of `length` bytes, interrupting on `interrupt`.
        public init(base: UInt64, length: UInt32 = 0x1000, interrupt: UInt32) {
            self.base = base
            self.length = length
            self.interrupt = interrupt
        }
    }

    /// Where the tables go by default: in the BIOS area below 1 MiB, where Linux also scans for an RSDP.
    public static let defaultAddress = GuestAddress(0xE_0000)
    /// Where the tables start (the RSDP, which Linux finds through the zero page or the PVH start info).
    public let address: GuestAddress
    /// The tables, laid out from ``address``, checksums filled in.
    public let bytes: [UInt8]

    /// Builds the tables for `vcpuCount` vCPUs (one local APIC each in the MADT) and `virtioDevices` (LNRO0005 devices in the DSDT), to be written at `address`.
    public init(vcpuCount: Int, virtioDevices: [VirtioMMIORecord] = [], at address: GuestAddress = ACPITables.defaultAddress) throws(LinuxBootError) {
        guard (1...254).contains(vcpuCount) else {
            throw .badField(name: "the MADT's processor count", value: UInt64(max(0, vcpuCount)), reason: "1 to 254")
        }
        guard address.rawValue % 16 == 0, address.rawValue < 0x1_0000_0000 - 0x1_0000 else {
            throw .badField(name: "the ACPI tables' address", value: address.rawValue, reason: "16-byte aligned, below 4 GiB")
        }
        for device in virtioDevices where device.base > UInt64(UInt32.max) - UInt64(device.length) {
            throw .badField(name: "a virtio-mmio device's base", value: device.base, reason: "must end below 4 GiB")
        }
        self.address = address
        let base = address.rawValue
        // Layout: RSDP (36, padded to 48), XSDT, FADT, MADT, DSDT, each 16-byte aligned.
        let dsdt = Self.table("DSDT", revision: 2, body: AML.scope("\\_SB_", virtioDevices.enumerated().flatMap { index, device in
            AML.virtioDevice(index: index, device: device)
        }))
        let madt = Self.madt(vcpuCount: vcpuCount)
        var offset = UInt64(48)
        func place(_ length: Int) -> UInt64 {
            defer { offset += (UInt64(length) + 15) & ~15 }
            return base + offset
        }
        let xsdtLength = 36 + 2 * 8
        let xsdtAddress = place(xsdtLength)
        let fadtAddress = place(276)
        let madtAddress = place(madt.count)
        let dsdtAddress = place(dsdt.count)
        let fadt = Self.fadt(dsdt: dsdtAddress)
        var xsdtBody: [UInt8] = []
        for pointer in [fadtAddress, madtAddress] { xsdtBody += [UInt8](littleEndian: pointer) }
        let xsdt = Self.table("XSDT", revision: 1, body: xsdtBody)

        var block = [UInt8](repeating: 0, count: Int(offset))
        func put(_ table: [UInt8], at tableAddress: UInt64) {
            let start = Int(tableAddress - base)
            block.replaceSubrange(start..<(start + table.count), with: table)
        }
        put(Self.rsdp(xsdt: xsdtAddress), at: base)
        put(xsdt, at: xsdtAddress)
        put(fadt, at: fadtAddress)
        put(madt, at: madtAddress)
        put(dsdt, at: dsdtAddress)
        bytes = block
    }

    /// Writes ``bytes`` at ``address``; refused if they do not fit in `memory`'s RAM.
    public func write(to memory: some GuestMemory) throws(LinuxBootError) {
        do { try memory.write(bytes, to: address) } catch { throw .guestMemory(error) }
    }

    // MARK: Tables

    /// A table: the 36-byte header, then `body`; the checksum covers the whole table.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var table = Array(signature.utf8) + [UInt8](littleEndian: UInt32(36 + body.count)) + [revision, 0]
        table += Array("HVKIT ".utf8) + Array("MICROVM ".utf8) + [UInt8](littleEndian: UInt32(1))
        table += Array("HVKT".utf8) + [UInt8](littleEndian: UInt32(1))
        table += body
        table[9] = byteChecksum(table)
        return table
    }

    static func rsdp(xsdt: UInt64) -> [UInt8] {
        var rsdp = Array("RSD PTR ".utf8) + [0] + Array("HVKIT ".utf8) + [2]  // revision 2: ACPI 2.0+
        rsdp += [UInt8](littleEndian: UInt32(0))  // no RSDT
        rsdp += [UInt8](littleEndian: UInt32(36)) + [UInt8](littleEndian: xsdt) + [0, 0, 0, 0]
        rsdp[8] = byteChecksum(rsdp[0..<20])
        rsdp[32] = byteChecksum(rsdp)
        return rsdp
    }

    static func fadt(dsdt: UInt64) -> [UInt8] {
        // Offsets are the specification's, from the table's start; the header is table()'s.
        var fields = [UInt8](repeating: 0, count: 276)
        fields.setLittleEndian(UInt32(truncatingIfNeeded: dsdt), at: 40)  // DSDT
        fields.setLittleEndian(UInt16(0b110), at: 109)  // IA-PC boot architecture: an 8042, no VGA
        fields.setLittleEndian(UInt32(1 << 20), at: 112)  // flags: HW_REDUCED_ACPI
        fields[131] = 0  // FADT minor version (6.0)
        fields.setLittleEndian(dsdt, at: 140)  // X_DSDT
        fields.replaceSubrange(268..<276, with: Array("HVKITHVK".utf8))  // hypervisor vendor identity
        return table("FACP", revision: 6, body: Array(fields[36...]))
    }

    static func madt(vcpuCount: Int) -> [UInt8] {
        var body = [UInt8](littleEndian: MPTable.localAPICAddress) + [UInt8](littleEndian: UInt32(1))  // PCAT_COMPAT
        for id in 0..<vcpuCount {
            body += [0, 8, UInt8(id), UInt8(id)] + [UInt8](littleEndian: UInt32(1))  // local APIC, enabled
        }
        body += [1, 12, UInt8(vcpuCount), 0] + [UInt8](littleEndian: MPTable.ioAPICAddress) + [UInt8](littleEndian: UInt32(0))  // I/O APIC, GSI base 0
        return table("APIC", revision: 4, body: body)
    }
}

/// Just enough AML (ACPI Machine Language) to declare devices.
enum AML {
    /// PkgLength: one byte up to 63, else a lead byte with the count of following bytes.
    static func packageLength(_ contentLength: Int) -> [UInt8] {
        // The length counts its own bytes.
        if contentLength + 1 < 0x40 { return [UInt8(contentLength + 1)] }
        for extra in 1...3 {
            let total = contentLength + 1 + extra
            if total < 1 << (4 + 8 * extra) {
                var bytes = [UInt8(extra << 6) | UInt8(total & 0x0F)]
                for index in 0..<extra { bytes.append(UInt8(truncatingIfNeeded: total >> (4 + 8 * index))) }
                return bytes
            }
        }
        return [0]  // Not reached for anything this module writes (tables are far below 256 MiB).
    }

    /// A four-character name segment, or a rooted path like "\\_SB_".
    static func name(_ text: String) -> [UInt8] { Array(text.utf8) }

    static func scope(_ path: String, _ body: [UInt8]) -> [UInt8] {
        let content = name(path) + body
        return [0x10] + packageLength(content.count) + content
    }

    static func device(_ segment: String, _ body: [UInt8]) -> [UInt8] {
        let content = name(segment) + body
        return [0x5B, 0x82] + packageLength(content.count) + content
    }

    static func namedString(_ segment: String, _ value: String) -> [UInt8] {
        [0x08] + name(segment) + [0x0D] + Array(value.utf8) + [0]
    }

    static func namedInteger(_ segment: String, _ value: UInt32) -> [UInt8] {
        [0x08] + name(segment) + [0x0C] + [UInt8](littleEndian: value)  // DWordPrefix
    }

    static func namedBuffer(_ segment: String, _ bytes: [UInt8]) -> [UInt8] {
        let size: [UInt8] = [0x0C] + [UInt8](littleEndian: UInt32(bytes.count))
        let content = size + bytes
        return [0x08] + name(segment) + [0x11] + packageLength(content.count) + content
    }

    /// Device VRnn: _HID "LNRO0005", _UID, and _CRS with its registers and interrupt.
    static func virtioDevice(index: Int, device: ACPITables.VirtioMMIORecord) -> [UInt8] {
        let hex = String(index, radix: 16, uppercase: true)
        let segment = "VR" + String(repeating: "0", count: max(0, 2 - hex.count)) + hex
        // Memory32Fixed (read/write), then an extended interrupt (consumer, edge, active high).
        var resources: [UInt8] = [0x86, 9, 0, 1] + [UInt8](littleEndian: UInt32(device.base)) + [UInt8](littleEndian: device.length)
        resources += [0x89, 6, 0, 0b0000_0011, 1] + [UInt8](littleEndian: device.interrupt)
        resources += [0x79, 0]  // end tag
        return self.device(segment, namedString("_HID", "LNRO0005") + namedInteger("_UID", UInt32(index)) + namedBuffer("_CRS", resources))
    }
}
