import HVCore

/// Why a Linux kernel image or its boot could not be prepared. Each case names the field or
/// the limit that is wrong, with the values found.
public enum LinuxBootError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The image ends before `what`, which needs `needed` bytes.
    case truncated(what: String, needed: UInt64, fileSize: UInt64)
    /// Neither an ELF file nor a bzImage (no "HdrS" at 0x202).
    case notAKernel
    /// boot_flag (0x1FE) is not 0xAA55.
    case badBootFlag(UInt16)
    /// The boot protocol is older than 2.12, the first with a 64-bit entry (xloadflags).
    case protocolTooOld(version: UInt16)
    /// xloadflags (0x236) lacks XLF_KERNEL_64: the kernel has no 64-bit entry point.
    case no64BitEntry(xloadflags: UInt16)
    /// loadflags (0x211) lacks LOADED_HIGH: a zImage, which loads at 0x10000.
    case notLoadedHigh(loadflags: UInt8)
    /// A setup header field holds a value the protocol does not allow.
    case badField(name: String, value: UInt64, reason: String)
    /// The bzImage's compressed kernel could not be extracted on the host; `reason` says why.
    case extraction(String)
    /// The kernel needs `size` bytes from an address the guest's RAM cannot give.
    case kernelDoesNotFit(address: UInt64, size: UInt64)
    /// The command line is longer than the kernel accepts (cmdline_size) or than its slot.
    case commandLineTooLong(length: Int, maximum: Int)
    /// No RAM below initrd_addr_max, above the kernel, holds the initrd.
    case initrdDoesNotFit(size: UInt64, limit: UInt64)
    /// The guest's RAM makes more e820 entries than the zero page holds.
    case tooManyMemoryRanges(Int)
    /// Two things the loader places would share guest memory.
    case overlap(String, String)
    /// PVH entry was asked for, but the kernel carries no XEN_ELFNOTE_PHYS32_ENTRY note (a
    /// bzImage never shows one: it is inside the compressed kernel).
    case noPVHNote
    /// The kernel's PVH note is unusable; the reason says how.
    case badPVHNote(String)
    /// The PVH start info with its memory map needs `size` bytes; the layout gives `capacity`.
    case startInfoDoesNotFit(size: Int, capacity: Int)
    /// The PVH start info's slot reaches above 4 GiB, which a 32-bit EBX cannot point into.
    case startInfoAbove4GiB(address: UInt64)
    /// Writing to guest memory failed.
    case guestMemory(GuestMemoryError)
    /// The ELF kernel was refused.
    case elf(ELFError)

    /// What went wrong, naming the field or the step.
    public var description: String {
        switch self {
        case let .truncated(what, needed, fileSize): return "kernel: \(what) needs \(needed) bytes but the image has \(fileSize)"
        case .notAKernel: return "kernel: neither an ELF file nor a bzImage (no \"HdrS\" at offset 0x202)"
        case let .badBootFlag(flag): return "bzImage: boot_flag (0x1FE) is 0x\(String(flag, radix: 16)), not 0xAA55"
        case let .protocolTooOld(version):
            return "bzImage: boot protocol \(version >> 8).\(version & 0xFF) is older than 2.12, the first with a 64-bit entry"
        case let .no64BitEntry(flags): return "bzImage: xloadflags (0x236) is 0x\(String(flags, radix: 16)), without XLF_KERNEL_64: no 64-bit entry"
        case let .notLoadedHigh(flags): return "bzImage: loadflags (0x211) is 0x\(String(flags, radix: 16)), without LOADED_HIGH (a zImage)"
        case let .badField(name, value, reason): return "bzImage: \(name) is 0x\(String(value, radix: 16)): \(reason)"
        case let .extraction(reason): return "bzImage: the compressed kernel cannot be extracted: \(reason)"
        case let .kernelDoesNotFit(address, size):
            return "kernel: needs 0x\(String(size, radix: 16)) bytes of RAM at 0x\(String(address, radix: 16)), which the guest does not have"
        case let .commandLineTooLong(length, maximum): return "command line: \(length) bytes, at most \(maximum) accepted"
        case let .initrdDoesNotFit(size, limit):
            return "initrd: no RAM for 0x\(String(size, radix: 16)) bytes above the kernel and below 0x\(String(limit, radix: 16))"
        case let .tooManyMemoryRanges(count): return "e820: \(count) RAM ranges, at most \(E820Map.maximumEntries) fit in the zero page"
        case let .overlap(first, second): return "boot layout: \(first) and \(second) overlap"
        case .noPVHNote: return "kernel: PVH entry asked for, but the image has no XEN_ELFNOTE_PHYS32_ENTRY note"
        case let .badPVHNote(reason): return "kernel: the PVH entry note is unusable: \(reason)"
        case let .startInfoDoesNotFit(size, capacity): return "PVH: the start info needs \(size) bytes; its slot has \(capacity)"
        case let .startInfoAbove4GiB(address):
            return "PVH: the start info's slot at 0x\(String(address, radix: 16)) reaches above 4 GiB; EBX cannot point there"
        case let .guestMemory(error): return "kernel: \(error)"
        case let .elf(error): return "kernel: \(error)"
        }
    }
}
