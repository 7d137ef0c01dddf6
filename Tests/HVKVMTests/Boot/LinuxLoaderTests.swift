import HVTestSupport
import HVCore
import Testing
@testable import HVBoot
@testable import HVKVM

/// The Linux loader: where it puts the kernel, command line, initrd and zero page, what it
/// refuses, and a synthetic kernel entered through the 64-bit boot protocol on real KVM.
@Suite struct LinuxLoaderTests {
    static let mib: UInt64 = 1 << 20

    func memory(_ size: UInt64) throws -> GuestMemoryMmap {
        try GuestMemoryMmap([MemoryRegionSpec(start: GuestAddress(0), size: size, options: [.noReserve])])
    }

    @Test("a bzImage loads at pref_address, with the zero page, command line and e820 map in place")
    func loadsAtPreferredAddress() throws {
        let memory = try memory(64 * Self.mib)
        let synthetic = SyntheticBzImage()
        let plan = try LinuxLoader.load(.bzImage(BzImage(bytes: synthetic.bytes)), commandLine: "console=ttyS0 quiet", into: memory)
        #expect(plan.kernel.start == GuestAddress(0x100_0000))
        #expect(plan.entry == GuestAddress(0x100_0200))
        #expect(try memory.readBytes(at: GuestAddress(0x100_0200), count: 4) == Array(TestGuests.linuxEntry.prefix(4)))
        let zeroPage = try memory.readBytes(at: plan.zeroPageAddress, count: ZeroPage.size)
        #expect(zeroPage == plan.zeroPage.bytes)
        #expect(plan.zeroPage.bootFlag == 0xAA55)
        #expect(plan.zeroPage.typeOfLoader == 0xFF)
        #expect(plan.zeroPage.commandLineAddress == plan.commandLine.rawValue)
        #expect(try memory.readBytes(at: plan.commandLine, count: 20) == Array("console=ttyS0 quiet".utf8) + [0])
        #expect(plan.zeroPage.memoryMap == [
            E820Entry(start: 0, length: 0x9_FC00, kind: .ram),
            E820Entry(start: 0x10_0000, length: 63 * Self.mib, kind: .ram),
        ])
        #expect(plan.initrd == nil)
        #expect(plan.zeroPage.initrd.size == 0)
    }

    @Test("with too little RAM at pref_address a relocatable kernel goes to the first aligned address")
    func relocates() throws {
        let memory = try memory(8 * Self.mib)
        let plan = try LinuxLoader.load(.bzImage(BzImage(bytes: SyntheticBzImage().bytes)), commandLine: "", into: memory)
        #expect(plan.kernel.start == GuestAddress(0x20_0000))
    }

    @Test("a kernel that cannot move and does not fit is refused, and nothing is written")
    func nonRelocatableDoesNotFit() throws {
        let memory = try memory(8 * Self.mib)
        var synthetic = SyntheticBzImage()
        synthetic.relocatable = false
        #expect(throws: LinuxBootError.kernelDoesNotFit(address: 0x100_0000, size: 0x1000)) {
            try LinuxLoader.load(.bzImage(BzImage(bytes: synthetic.bytes)), commandLine: "x", into: memory)
        }
        #expect(try memory.readBytes(at: GuestAddress(0x7000), count: 4096).allSatisfy { $0 == 0 })
        #expect(try memory.readBytes(at: GuestAddress(0x2_0000), count: 16).allSatisfy { $0 == 0 })
    }

    @Test("a command line longer than cmdline_size is refused")
    func commandLineTooLong() throws {
        var synthetic = SyntheticBzImage()
        synthetic.commandLineSize = 16
        let kernel = try LinuxKernel(bytes: synthetic.bytes)
        let memory = try memory(32 * Self.mib)
        #expect(throws: LinuxBootError.commandLineTooLong(length: 17, maximum: 16)) {
            try LinuxLoader.load(kernel, commandLine: String(repeating: "a", count: 17), into: memory)
        }
        _ = try LinuxLoader.load(kernel, commandLine: String(repeating: "a", count: 16), into: memory)
    }

    @Test("the initrd goes as high as initrd_addr_max and RAM allow, page-aligned, above the kernel")
    func placesInitrd() throws {
        let memory = try memory(64 * Self.mib)
        let initrd = [UInt8](repeating: 0xC3, count: 3 * 4096 + 100)
        var synthetic = SyntheticBzImage()
        let plan = try LinuxLoader.load(.bzImage(BzImage(bytes: synthetic.bytes)), commandLine: "", initrd: initrd, into: memory)
        let range = try #require(plan.initrd)
        #expect(range.start.rawValue % 4096 == 0)
        #expect(range.start.rawValue + range.length <= 64 * Self.mib)
        #expect(range.start.rawValue + range.length > 64 * Self.mib - 4096)
        #expect(plan.zeroPage.initrd == (range.start.rawValue, UInt64(initrd.count)))
        #expect(try memory.readBytes(at: range.start, count: initrd.count) == initrd)

        // A lower initrd_addr_max moves it down.
        synthetic.initrdAddressMax = 0x20F_FFFF
        let limited = try LinuxLoader.load(.bzImage(BzImage(bytes: synthetic.bytes)), commandLine: "", initrd: initrd, into: memory)
        let lower = try #require(limited.initrd)
        #expect(lower.start.rawValue + lower.length <= 0x210_0000)
    }

    @Test("an initrd with no room above the kernel and below its limit is refused")
    func initrdDoesNotFit() throws {
        let memory = try memory(32 * Self.mib)
        let kernel = try LinuxKernel(bytes: SyntheticBzImage().bytes)
        #expect(throws: LinuxBootError.self) {
            try LinuxLoader.load(kernel, commandLine: "", initrd: [UInt8](repeating: 1, count: Int(32 * Self.mib)), into: memory)
        }
        var synthetic = SyntheticBzImage()
        synthetic.initrdAddressMax = 0x80_0000  // below the kernel at 16 MiB
        #expect(throws: LinuxBootError.initrdDoesNotFit(size: 4096, limit: 0x80_0000)) {
            try LinuxLoader.load(.bzImage(BzImage(bytes: synthetic.bytes)), commandLine: "", initrd: [UInt8](repeating: 1, count: 4096), into: memory)
        }
    }

    @Test("the e820 map follows the guest's regions and holes")
    func memoryMapWithHoles() throws {
        let memory = try GuestMemoryMmap([
            MemoryRegionSpec(start: GuestAddress(0), size: 512 * Self.mib, options: [.noReserve]),
            MemoryRegionSpec(start: GuestAddress(4 << 30), size: 512 * Self.mib, options: [.noReserve]),
        ])
        #expect(try E820Map.entries(for: memory) == [
            E820Entry(start: 0, length: 0x9_FC00, kind: .ram),
            E820Entry(start: 0x10_0000, length: 511 * Self.mib, kind: .ram),
            E820Entry(start: 4 << 30, length: 512 * Self.mib, kind: .ram),
        ])
        // RAM that starts inside the legacy window keeps only what lies above it.
        let high = try GuestMemoryMmap([MemoryRegionSpec(start: GuestAddress(0xA_0000), size: Self.mib, options: [.noReserve])])
        #expect(try E820Map.entries(for: high) == [E820Entry(start: 0x10_0000, length: Self.mib - 0x6_0000, kind: .ram)])
    }

    @Test("an ELF kernel loads by its physical addresses and gets a synthesized header")
    func loadsELF() throws {
        let memory = try memory(16 * Self.mib)
        let elf = syntheticELF(code: TestGuests.linuxEntry, at: 0x20_0000)
        let kernel = try LinuxKernel(bytes: elf)
        let plan = try LinuxLoader.load(kernel, commandLine: "root=/dev/vda", into: memory)
        #expect(plan.entry == GuestAddress(0x20_0000))
        #expect(plan.zeroPage.bootFlag == 0xAA55)
        #expect(try memory.readBytes(at: GuestAddress(0x20_0000), count: TestGuests.linuxEntry.count) == TestGuests.linuxEntry)
    }

    @Test("a kernel placed over the zero page or page tables is refused")
    func overlapsAreRefused() throws {
        let memory = try memory(16 * Self.mib)
        let onZeroPage = try LinuxKernel(bytes: syntheticELF(code: TestGuests.linuxEntry, at: 0x7800))
        #expect(throws: LinuxBootError.overlap("the kernel", "the zero page")) {
            try LinuxLoader.load(onZeroPage, commandLine: "", into: memory)
        }
        let onTables = try LinuxKernel(bytes: syntheticELF(code: TestGuests.linuxEntry, at: 0x2000))
        #expect(throws: LinuxBootError.overlap("the kernel", "the page tables")) {
            try LinuxLoader.load(onTables, commandLine: "", into: memory)
        }
        let pastRAM = try LinuxKernel(bytes: syntheticELF(code: TestGuests.linuxEntry, at: 15 * Self.mib, memorySize: 2 * Self.mib))
        #expect(throws: LinuxBootError.self) { try LinuxLoader.load(pastRAM, commandLine: "", into: memory) }
    }

    @Test("neither ELF nor bzImage is refused")
    func notAKernel() {
        for bytes in [[UInt8](), [0x7F, 0x45, 0x4C], [UInt8](repeating: 0, count: 0x1000)] {
            #expect(throws: LinuxBootError.self, "\(bytes.count) bytes") { try LinuxKernel(bytes: bytes) }
        }
    }

    @Test("a synthetic kernel entered through the 64-bit protocol reads its command line and e820 map", .requiresKVM)
    func bootsOnKVM() async throws {
        let kvm = try KVM()
        let vm = try kvm.createVM()
        let memory = try memory(32 * Self.mib)
        try vm.map(memory)
        let commandLine = "console=ttyS0 earlyprintk=serial hvkit=1"
        let plan = try LinuxLoader.load(LinuxKernel(bytes: SyntheticBzImage().bytes), commandLine: commandLine, into: memory)

        let serial = Locked<[UInt8]>([])
        let e820Count = Locked<UInt64?>(nil)
        let runner = VCPURunner(vm: vm, pio: Bus(space: .pio), mmio: Bus(space: .mmio)) { _, exit in
            guard case let .ioOut(port, size, data) = exit else { return nil }
            switch port {
            case 0x3F8: serial.withLock { $0.append(UInt8(truncatingIfNeeded: data.value(width: size))) }
            case 0x3F9: e820Count.withLock { $0 = data.value(width: size) }
            default: break
            }
            return .resume
        }
        let cpuid = try kvm.supportedCPUID()
        try runner.start(vcpuCount: 1) { vcpu throws(KVMError) in
            try vcpu.setCPUID(cpuid)
            try vcpu.setupLinuxBoot(plan, memory: memory)
        }
        let (reason, timedOut) = await TestVM.wait(for: runner, timeout: .seconds(10))
        #expect(!timedOut)
        #expect(reason == .halted(vcpu: 0))
        #expect(String(decoding: serial.withLock { $0 }, as: UTF8.self) == commandLine)
        #expect(e820Count.withLock { $0 } == 2)
    }
}
