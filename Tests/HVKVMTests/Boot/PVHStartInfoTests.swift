import HVCore
import HVTestSupport
import Testing
@testable import HVBoot
@testable import HVKVM

/// PVH: finding the entry note, refusing bad ones, the start info the loader writes, and a
/// synthetic PVH kernel entered in 32-bit mode on real KVM.
@Suite struct PVHStartInfoTests {
    static let mib: UInt64 = 1 << 20
    static let kernelAddress: UInt64 = 0x20_0000

    func memory(_ size: UInt64) throws -> GuestMemoryMmap {
        try GuestMemoryMmap([MemoryRegionSpec(start: GuestAddress(0), size: size, options: [.noReserve])])
    }

    /// The PVH test guest as an ELF kernel whose note points at its first byte.
    func pvhKernel(notes: [UInt8]? = nil) throws -> LinuxKernel {
        try LinuxKernel(bytes: syntheticELF(code: TestGuests.pvhEntry, at: Self.kernelAddress,
                                            notes: notes ?? pvhNote(entry: Self.kernelAddress)))
    }

    @Test("the loader chooses PVH for an ELF with the note and writes the start info, module list and memory map")
    func writesStartInfo() throws {
        let memory = try memory(64 * Self.mib)
        let initrd = [UInt8](repeating: 0x5A, count: 5000)
        let plan = try LinuxLoader.load(try pvhKernel(), commandLine: "console=hvc0", initrd: initrd, into: memory,
                                        acpiRoot: GuestAddress(0xE_0000))
        #expect(plan.bootProtocol == .pvh)
        #expect(plan.entry == GuestAddress(Self.kernelAddress))
        let info = try #require(plan.startInfo)
        let start = plan.layout.startInfo
        #expect(try memory.readBytes(at: start, count: info.bytes.count) == info.bytes)
        #expect(try memory.read(UInt32.self, at: start) == 0x336E_C578)
        #expect(try memory.read(UInt32.self, at: start.checkedAdd(4)) == 1)
        #expect(info.commandLineAddress == plan.commandLine.rawValue)
        #expect(info.rsdpAddress == 0xE_0000)
        #expect(try memory.readBytes(at: plan.commandLine, count: 13) == Array("console=hvc0".utf8) + [0])

        // The one module is the initrd.
        #expect(info.moduleCount == 1)
        let initrdRange = try #require(plan.initrd)
        let moduleList = GuestAddress(try memory.read(UInt64.self, at: start.checkedAdd(16)))
        #expect(try memory.read(UInt64.self, at: moduleList) == initrdRange.start.rawValue)
        #expect(try memory.read(UInt64.self, at: moduleList.checkedAdd(8)) == 5000)
        #expect(try memory.readBytes(at: initrdRange.start, count: initrd.count) == initrd)

        // The memory map is the e820 map, in hvm_memmap_table_entry form.
        #expect(info.memoryMapEntryCount == UInt32(plan.memoryMap.count))
        let map = GuestAddress(try memory.read(UInt64.self, at: start.checkedAdd(40)))
        for (index, entry) in plan.memoryMap.enumerated() {
            let base = try map.checkedAdd(UInt64(index) * 24)
            #expect(try memory.read(UInt64.self, at: base) == entry.start)
            #expect(try memory.read(UInt64.self, at: base.checkedAdd(8)) == entry.length)
            #expect(try memory.read(UInt32.self, at: base.checkedAdd(16)) == entry.kind.rawValue)
        }
        // No zero page: a PVH kernel does not read one.
        #expect(try memory.readBytes(at: plan.zeroPageAddress, count: 0x300) == [UInt8](repeating: 0, count: 0x300))
    }

    @Test("without an initrd the start info lists no module")
    func noModules() throws {
        let plan = try LinuxLoader.load(try pvhKernel(), commandLine: "", into: try memory(16 * Self.mib))
        let info = try #require(plan.startInfo)
        #expect(info.moduleCount == 0)
        #expect(info.rsdpAddress == 0)
        #expect(info.bytes.count == 56 + 24 * plan.memoryMap.count)
    }

    @Test("the 64-bit protocol can be chosen for a kernel with the note; PVH cannot be forced on one without")
    func choosingTheProtocol() throws {
        let memory = try memory(16 * Self.mib)
        let plan = try LinuxLoader.load(try pvhKernel(), commandLine: "", into: memory, bootProtocol: .linux64)
        #expect(plan.bootProtocol == .linux64)
        #expect(plan.startInfo == nil)
        #expect(plan.zeroPage.bootFlag == 0xAA55)

        let plainELF = try LinuxKernel(bytes: syntheticELF(code: TestGuests.linuxEntry, at: Self.kernelAddress))
        #expect(try LinuxLoader.load(plainELF, commandLine: "", into: memory).bootProtocol == .linux64)
        #expect(throws: LinuxBootError.noPVHNote) { try LinuxLoader.load(plainELF, commandLine: "", into: memory, bootProtocol: .pvh) }
        let bzImage = try LinuxKernel(bytes: SyntheticBzImage().bytes)
        #expect(throws: LinuxBootError.noPVHNote) { try LinuxLoader.load(bzImage, commandLine: "", into: memory, bootProtocol: .pvh) }
    }

    @Test("a bad PVH note is refused with the reason", arguments: [
        (elfNote(name: "Xen", type: 18, descriptor: [0, 0, 0x20]), "3 bytes"),
        (elfNote(name: "Xen", type: 18, descriptor: [UInt8](repeating: 0, count: 16)), "16 bytes"),
        (pvhNote(entry: 1 << 32), "above 4 GiB"),
        (pvhNote(entry: 0x30_0000), "not inside"),
        (pvhNote(entry: 0x1F_FFFF), "not inside"),
        (elfNote(name: "Xen", type: 18, descriptor: [0, 0, 0x20, 0], descriptorSize: 0xFFFF_FFFF), "reaches past"),
    ] as [([UInt8], String)])
    func badNotes(notes: [UInt8], reason: String) throws {
        let kernel = try pvhKernel(notes: notes)
        let memory = try memory(16 * Self.mib)
        do {
            _ = try LinuxLoader.load(kernel, commandLine: "", into: memory)
            Issue.record("accepted a bad note (\(reason))")
        } catch {
            #expect(error.description.contains(reason), "\(error)")
        }
        // Refused before anything was written.
        #expect(try memory.readBytes(at: GuestAddress(Self.kernelAddress), count: 4) == [0, 0, 0, 0])
    }

    @Test("a 4-byte note and notes of other owners or types are read as Linux and Xen write them")
    func otherNotes() throws {
        let fourBytes = try pvhKernel(notes: elfNote(name: "Xen", type: 18, descriptor: [UInt8](littleEndian: UInt32(Self.kernelAddress))))
        #expect(try LinuxLoader.load(fourBytes, commandLine: "", into: memory(16 * Self.mib)).bootProtocol == .pvh)
        // Right type, wrong owner; right owner, another type: no PVH entry.
        let others = elfNote(name: "Linux", type: 18, descriptor: [UInt8](littleEndian: Self.kernelAddress))
            + elfNote(name: "Xen", type: 17, descriptor: [UInt8](littleEndian: Self.kernelAddress))
        #expect(try LinuxLoader.load(pvhKernel(notes: others), commandLine: "", into: memory(16 * Self.mib)).bootProtocol == .linux64)
    }

    @Test("a start info slot too small for the memory map, or above 4 GiB, is refused")
    func startInfoCapacity() throws {
        var layout = LinuxBootLayout()
        layout.startInfoCapacity = 64
        #expect(throws: LinuxBootError.startInfoDoesNotFit(size: 56 + 2 * 24, capacity: 64)) {
            try LinuxLoader.load(try pvhKernel(), commandLine: "", into: try memory(16 * Self.mib), layout: layout)
        }
        // EBX is 32 bits: a slot at or reaching past 4 GiB is refused, not truncated.
        for address: UInt64 in [1 << 32, (1 << 32) - 0x800, .max - 0x800] {
            var high = LinuxBootLayout()
            high.startInfo = GuestAddress(address)
            #expect(throws: LinuxBootError.startInfoAbove4GiB(address: address)) {
                try LinuxLoader.load(try pvhKernel(), commandLine: "", into: try memory(16 * Self.mib), layout: high)
            }
        }
    }

    @Test("a synthetic PVH kernel entered in 32-bit mode finds its start info, command line, map and initrd", .requiresKVM)
    func bootsOnKVM() async throws {
        let kvm = try KVM()
        let vm = try kvm.createVM()
        let memory = try memory(32 * Self.mib)
        try vm.map(memory)
        let commandLine = "console=ttyS0 pvh=1"
        let plan = try LinuxLoader.load(try pvhKernel(), commandLine: commandLine, initrd: [1, 2, 3], into: memory)

        let serial = Locked<[UInt8]>([])
        let ports = Locked<[UInt16: UInt64]>([:])
        let runner = VCPURunner(vm: vm, pio: Bus(space: .pio), mmio: Bus(space: .mmio)) { _, exit in
            guard case let .ioOut(port, size, data) = exit else { return nil }
            if port == 0x3F8 {
                serial.withLock { $0.append(UInt8(truncatingIfNeeded: data.value(width: size))) }
            } else {
                ports.withLock { $0[port] = data.value(width: size) }
            }
            return .resume
        }
        let cpuid = try kvm.supportedCPUID()
        try runner.start(vcpuCount: 1) { vcpu throws(KVMError) in
            try vcpu.setCPUID(cpuid)
            try vcpu.setupLinuxBoot(plan, memory: memory)
            let sregs = try vcpu.specialRegisters()
            // PVH's entry state: protected mode, paging off, a 32-bit code segment.
            #expect(sregs.cr0 & 1 == 1)
            #expect(sregs.cr0 & (1 << 31) == 0)
            #expect(sregs.efer == 0)
            #expect(sregs.cs.db && !sregs.cs.l)
            #expect(try vcpu.registers().rbx == plan.layout.startInfo.rawValue)
        }
        let (reason, timedOut) = await TestVM.wait(for: runner, timeout: .seconds(10))
        #expect(!timedOut)
        #expect(reason == .halted(vcpu: 0))
        #expect(String(decoding: serial.withLock { $0 }, as: UTF8.self) == commandLine)
        #expect(ports.withLock { $0 } == [0x3FB: 1, 0x3F9: 2, 0x3FA: 1])
    }
}
