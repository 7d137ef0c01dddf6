import HVCore

/// A kernel that boots through the Linux x86 64-bit boot protocol.
public enum LinuxKernel: Sendable {
    /// A bzImage; its protected-mode kernel is loaded and entered at +0x200 (its own
    /// decompressor then runs in the guest).
    case bzImage(BzImage)
    /// An ELF executable (vmlinux, or any guest that follows the protocol: 64-bit entry
    /// with RSI pointing at the zero page), loaded by its physical addresses.
    case elf(ELF64Image)

    /// Recognises the image by its magic: ELF, else a bzImage.
    public init(bytes: [UInt8]) throws(LinuxBootError) {
        if bytes.starts(with: [0x7F, 0x45, 0x4C, 0x46]) {
            do { self = .elf(try ELF64Image(bytes: bytes)) } catch { throw .elf(error) }
        } else {
            self = .bzImage(try BzImage(bytes: bytes))
        }
    }
}

/// How the vCPU enters the kernel.
public enum LinuxBootProtocol: Sendable, Hashable {
    /// The Linux 64-bit boot protocol: long mode with identity page tables, RSI pointing at
    /// the zero page. Any bzImage or vmlinux, and any ELF guest written for it.
    case linux64
    /// PVH: 32-bit protected mode, paging off, at the entry of the ELF image's
    /// XEN_ELFNOTE_PHYS32_ENTRY note, EBX pointing at an `hvm_start_info` (``PVHStartInfo``).
    case pvh
}

/// Where the loader puts what it writes besides the kernel and the initrd. The defaults sit
/// in the first 1 MiB, clear of the long-mode tables (``LongModeLayout``, 0x500 to 0x7000).
public struct LinuxBootLayout: Sendable, Hashable {
    /// The zero page, for the 64-bit protocol.
    public var zeroPage: GuestAddress = GuestAddress(0x7000)
    /// The PVH start info with its module list and memory map, for a PVH entry.
    public var startInfo: GuestAddress = GuestAddress(0x9000)
    /// Bytes reserved for the start info at ``startInfo``, module list and memory map included.
    public var startInfoCapacity: Int = 0x1000
    /// The stack pointer at entry (the kernel soon switches to its own).
    public var stackPointer: UInt64 = 0x8FF0
    /// Where the command line goes.
    public var commandLine: GuestAddress = GuestAddress(0x2_0000)
    /// Room for the command line, its NUL included.
    public var commandLineCapacity: Int = 0x1_0000
    /// Where the long-mode GDT and page tables go (64-bit protocol) and the GDT (PVH).
    public var longMode = LongModeLayout()

    /// The default layout, all of it in the first 1 MiB.
    public init() {}
}

/// What ``LinuxLoader/load(_:commandLine:initrd:into:layout:acpiRoot:bootProtocol:)`` put
/// where, and how to enter.
public struct LinuxBootPlan: Sendable, Hashable {
    /// How the vCPU enters the kernel.
    public let bootProtocol: LinuxBootProtocol
    /// The entry point: 64-bit for ``LinuxBootProtocol/linux64``, 32-bit for PVH.
    public let entry: GuestAddress
    /// Where the kernel was loaded, and the RAM it may use from there (init_size).
    public let kernel: GuestAddressRange
    /// The zero page, written for the 64-bit protocol only.
    public let zeroPageAddress: GuestAddress
    /// The zero page as written (64-bit protocol); built for PVH too, for inspection.
    public let zeroPage: ZeroPage
    /// What a PVH entry finds through EBX; nil for the 64-bit protocol.
    public let startInfo: PVHStartInfo?
    /// Where the command line is.
    public let commandLine: GuestAddress
    /// Where the initrd is, if there is one.
    public let initrd: GuestAddressRange?
    /// The e820 map the kernel gets (in the zero page or the start info).
    public let memoryMap: [E820Entry]
    /// The layout the plan was made with.
    public let layout: LinuxBootLayout
}

/// Loads a Linux kernel (or any guest that follows the 64-bit boot protocol) into guest
/// memory with its zero page, command line and initrd. Every value taken from the image is
/// checked before use; nothing is written unless everything fits.
public enum LinuxLoader {
    /// The highest initrd address for an ELF kernel, which has no header to say.
    static let elfInitrdAddressMax: UInt64 = 0x7FFF_FFFF

    /// Plans, checks and writes in one call: ``plan(_:commandLine:initrdSize:memory:layout:acpiRoot:bootProtocol:)``,
    /// ``check(_:)``, then ``write(_:kernel:commandLine:initrd:into:)``. Nothing is written
    /// unless everything fits.
    /// - Parameters:
    ///   - kernel: the kernel to load.
    ///   - commandLine: the kernel command line.
    ///   - initrd: the initramfs, if any, placed as high as the kernel allows.
    ///   - memory: the guest RAM everything goes into.
    ///   - layout: where the loader's own structures go.
    ///   - acpiRoot: where the embedder put ACPI tables (their RSDP), recorded in the zero
    ///     page's acpi_rsdp_addr or the PVH start info's rsdp_paddr.
    ///   - bootProtocol: how the kernel will be entered. nil (the default) chooses PVH for an
    ///     ELF image with a PVH note, as QEMU and Firecracker do, and the 64-bit protocol
    ///     otherwise. Asking for PVH for an image without the note is refused.
    public static func load(
        _ kernel: LinuxKernel, commandLine: String, initrd: [UInt8]? = nil,
        into memory: some GuestMemory, layout: LinuxBootLayout = LinuxBootLayout(), acpiRoot: GuestAddress? = nil,
        bootProtocol: LinuxBootProtocol? = nil
    ) throws(LinuxBootError) -> LinuxBootPlan {
        let plan = try plan(kernel, commandLine: commandLine, initrdSize: initrd?.count ?? 0, memory: memory, layout: layout,
                            acpiRoot: acpiRoot, bootProtocol: bootProtocol)
        try check(plan)
        try write(plan, kernel: kernel, commandLine: commandLine, initrd: initrd, into: memory)
        return plan
    }

    /// Decides where everything goes and how the kernel is entered, from the image's header
    /// and `memory`'s RAM, without writing anything: the kernel's place and entry, the command
    /// line (refused if too long), the initrd's place (as high as the kernel allows), the e820
    /// map, and the zero page or PVH start info.
    public static func plan(
        _ kernel: LinuxKernel, commandLine: String, initrdSize: Int = 0,
        memory: some GuestMemory, layout: LinuxBootLayout = LinuxBootLayout(), acpiRoot: GuestAddress? = nil,
        bootProtocol: LinuxBootProtocol? = nil
    ) throws(LinuxBootError) -> LinuxBootPlan {
        // The kernel's place, its entry, and the zero page it starts from.
        let kernelRange: GuestAddressRange
        var entry: GuestAddress
        var chosenProtocol = LinuxBootProtocol.linux64
        var zeroPage: ZeroPage
        let commandLineLimit: Int
        let initrdAddressMax: UInt64
        switch kernel {
        case let .bzImage(image):
            let header = image.header
            let size = UInt64(header.initSize)
            let address = try loadAddress(for: header, size: size, memory: memory)
            kernelRange = try range(address, size)
            entry = GuestAddress(address + 0x200)
            zeroPage = ZeroPage(header: image.headerBytes)
            commandLineLimit = Int(header.commandLineSize)
            initrdAddressMax = UInt64(header.initrdAddressMax)
            // A bzImage's PVH note is inside its compressed kernel, out of reach.
            if bootProtocol == .pvh { throw .noPVHNote }
        case let .elf(image):
            guard let loaded = image.loadedRange else { throw .elf(.noLoadableSegment) }
            kernelRange = loaded
            entry = image.entry
            commandLineLimit = layout.commandLineCapacity - 1
            zeroPage = .synthesizedHeader(commandLineSize: UInt32(commandLineLimit), kernelAlignment: 0x20_0000)
            initrdAddressMax = elfInitrdAddressMax
            if bootProtocol != .linux64 {
                if let pvhEntry = try PVH.entryPoint(of: image) {
                    entry = pvhEntry
                    chosenProtocol = .pvh
                } else if bootProtocol == .pvh {
                    throw .noPVHNote
                }
            }
        }
        guard memory.isRAM(kernelRange.start, length: kernelRange.length) else {
            throw .kernelDoesNotFit(address: kernelRange.start.rawValue, size: kernelRange.length)
        }

        // The command line, NUL-terminated.
        let line = Array(commandLine.utf8)
        let maximum = min(commandLineLimit, layout.commandLineCapacity - 1)
        guard line.count <= maximum else { throw .commandLineTooLong(length: line.count, maximum: maximum) }
        zeroPage.setCommandLine(at: layout.commandLine.rawValue)

        // The initrd: as high as the kernel allows, above the kernel.
        var initrdRange: GuestAddressRange?
        if initrdSize > 0 {
            let address = try initrdAddress(size: UInt64(initrdSize), limit: initrdAddressMax, above: kernelRange, memory: memory)
            initrdRange = try range(address, UInt64(initrdSize))
            zeroPage.setInitrd(at: address, size: UInt64(initrdSize))
        }

        let memoryMap = try E820Map.entries(for: memory)
        zeroPage.setMemoryMap(memoryMap)
        if let acpiRoot { zeroPage.setACPIRoot(at: acpiRoot.rawValue) }
        var startInfo: PVHStartInfo?
        if chosenProtocol == .pvh {
            let info = PVHStartInfo(at: layout.startInfo, commandLine: layout.commandLine, initrd: initrdRange,
                                    acpiRoot: acpiRoot, memoryMap: memoryMap)
            guard info.bytes.count <= layout.startInfoCapacity else {
                throw .startInfoDoesNotFit(size: info.bytes.count, capacity: layout.startInfoCapacity)
            }
            // EBX carries its address: the block must lie below 4 GiB.
            guard layout.startInfo.rawValue <= UInt64(UInt32.max) - UInt64(layout.startInfoCapacity) else {
                throw .startInfoAbove4GiB(address: layout.startInfo.rawValue)
            }
            startInfo = info
        }

        return LinuxBootPlan(bootProtocol: chosenProtocol, entry: entry, kernel: kernelRange, zeroPageAddress: layout.zeroPage,
                             zeroPage: zeroPage, startInfo: startInfo, commandLine: layout.commandLine, initrd: initrdRange,
                             memoryMap: memoryMap, layout: layout)
    }

    /// Refuses a plan in which two things overlap: the kernel, the zero page or start info,
    /// the command line, the page tables, the GDT and the initrd.
    public static func check(_ plan: LinuxBootPlan) throws(LinuxBootError) {
        let layout = plan.layout
        let kernelRange = plan.kernel
        // Nothing may land on anything else. (Wrapping sums: a layout near 2^64 fails the
        // memory writes below instead of trapping here.)
        var placed: [(name: String, start: UInt64, end: UInt64)] = [
            ("the kernel", kernelRange.start.rawValue, kernelRange.start.rawValue &+ kernelRange.length),
            plan.bootProtocol == .pvh
                ? ("the start info", layout.startInfo.rawValue, layout.startInfo.rawValue &+ UInt64(layout.startInfoCapacity))
                : ("the zero page", layout.zeroPage.rawValue, layout.zeroPage.rawValue &+ UInt64(ZeroPage.size)),
            ("the command line", layout.commandLine.rawValue, layout.commandLine.rawValue &+ UInt64(layout.commandLineCapacity)),
            ("the page tables", layout.longMode.pageTableAddress.rawValue,
             layout.longMode.pageTableAddress.rawValue &+ layout.longMode.pageTableBytes),
            ("the GDT", layout.longMode.gdtAddress.rawValue, layout.longMode.gdtAddress.rawValue &+ 0x200),
        ]
        if let initrdRange = plan.initrd { placed.append(("the initrd", initrdRange.start.rawValue, initrdRange.start.rawValue + initrdRange.length)) }
        for (index, first) in placed.enumerated() {
            for second in placed[(index + 1)...] where first.start < second.end && second.start < first.end {
                throw .overlap(first.name, second.name)
            }
        }

    }

    /// Writes what `plan` placed: the kernel, the command line, the initrd, and the zero page
    /// or PVH start info. Pass the same kernel, command line and initrd the plan was made for.
    public static func write(
        _ plan: LinuxBootPlan, kernel: LinuxKernel, commandLine: String, initrd: [UInt8]? = nil, into memory: some GuestMemory
    ) throws(LinuxBootError) {
        guard initrd?.count ?? 0 == Int(plan.initrd?.length ?? 0) else {
            throw .initrdDoesNotFit(size: UInt64(initrd?.count ?? 0), limit: plan.initrd?.length ?? 0)
        }
        switch kernel {
        case let .bzImage(image): try write(image.protectedModeKernel, to: plan.kernel.start, in: memory)
        case let .elf(image):
            do { try image.load(into: memory) } catch { throw .elf(error) }
        }
        try write(Array(commandLine.utf8) + [0], to: plan.commandLine, in: memory)
        if let initrd, let initrdRange = plan.initrd { try write(initrd, to: initrdRange.start, in: memory) }
        if let startInfo = plan.startInfo {
            try write(startInfo.bytes, to: startInfo.address, in: memory)
        } else {
            try write(plan.zeroPage.bytes, to: plan.zeroPageAddress, in: memory)
        }
    }

    /// pref_address when the guest has the RAM there; otherwise, for a relocatable kernel,
    /// the first address from 1 MiB aligned to kernel_alignment.
    static func loadAddress(for header: LinuxSetupHeader, size: UInt64, memory: some GuestMemory) throws(LinuxBootError) -> UInt64 {
        let preferred = header.preferredAddress
        if preferred >= 0x10_0000, preferred.addingReportingOverflow(size).overflow == false,
           memory.isRAM(GuestAddress(preferred), length: size) {
            return preferred
        }
        guard header.relocatable else { throw .kernelDoesNotFit(address: preferred, size: size) }
        let alignment = UInt64(header.kernelAlignment)
        let address = (0x10_0000 + alignment - 1) & ~(alignment - 1)
        guard memory.isRAM(GuestAddress(address), length: size) else { throw .kernelDoesNotFit(address: address, size: size) }
        return address
    }

    /// The highest page-aligned address where `size` bytes of RAM end at or below `limit`
    /// and start above the kernel.
    static func initrdAddress(size: UInt64, limit: UInt64, above kernel: GuestAddressRange, memory: some GuestMemory) throws(LinuxBootError) -> UInt64 {
        let kernelEnd = kernel.start.rawValue + kernel.length
        let top = limit == .max ? limit : limit + 1
        for ram in memory.ramRanges.sorted(by: { $0.start.rawValue > $1.start.rawValue }) {
            let end = min(ram.start.rawValue + ram.length, top)
            guard end >= size else { continue }
            let address = (end - size) & ~UInt64(0xFFF)
            if address >= max(ram.start.rawValue, kernelEnd) { return address }
        }
        throw .initrdDoesNotFit(size: size, limit: limit)
    }

    private static func write(_ bytes: some Collection<UInt8>, to address: GuestAddress, in memory: some GuestMemory) throws(LinuxBootError) {
        do { try memory.write(bytes, to: address) } catch { throw .guestMemory(error) }
    }

    private static func range(_ start: UInt64, _ length: UInt64) throws(LinuxBootError) -> GuestAddressRange {
        do { return try GuestAddressRange(start: GuestAddress(start), length: length) } catch { throw .guestMemory(error) }
    }
}
