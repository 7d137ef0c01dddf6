import CHVCoreShims
import Glibc
import SystemPackage

/// What backs a region of guest RAM.
public enum MemoryBacking: Sendable {
    /// Private anonymous memory (the usual case).
    case anonymous
    /// A memfd, shared with whoever receives its descriptor (vhost-user style backends,
    /// snapshots). The name shows in /proc/PID/fd and is for debugging only.
    case memfd(name: String)
    /// A file mapped shared at `offset`; guest writes reach the file unless the region is
    /// read-only. HVKit does not take ownership of the descriptor.
    case file(FileDescriptor, offset: Int64)
    /// A file mapped private (copy-on-write) at `offset`: the guest sees the file's bytes, its
    /// writes stay in this process, and pages are read from the file only when first touched.
    /// How a snapshot's memory is restored lazily; clones of one snapshot share its page cache.
    /// HVKit does not take ownership of the descriptor.
    case privateFile(FileDescriptor, offset: Int64)
}

/// How a region is mapped.
public struct MemoryRegionOptions: OptionSet, Sendable, Hashable {
    /// The options as bits.
    public let rawValue: UInt32
    /// Options from their bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Map with MAP_NORESERVE: no swap is reserved up front, so large sparse guests are cheap.
    public static let noReserve = MemoryRegionOptions(rawValue: 1 << 0)
    /// Back with explicit huge pages (MAP_HUGETLB or MFD_HUGETLB). Fails with ENOMEM when the
    /// host has none reserved; see ``transparentHugePages`` for the best-effort variant.
    public static let hugePages = MemoryRegionOptions(rawValue: 1 << 1)
    /// Ask for transparent huge pages with madvise(MADV_HUGEPAGE); ignored if unsupported.
    public static let transparentHugePages = MemoryRegionOptions(rawValue: 1 << 2)
    /// Map read-only: the host API refuses writes, and a hypervisor should map the slot
    /// read-only too (guest writes then arrive as MMIO exits).
    public static let readOnly = MemoryRegionOptions(rawValue: 1 << 3)
    /// Record which pages the VMM writes through the checked API (devices, services, the
    /// loader), for diff snapshots (``GuestMemoryMmap/takeWrittenPages()``). Costs an atomic
    /// OR per page written.
    public static let logWrites = MemoryRegionOptions(rawValue: 1 << 4)
}

/// A request for one region of guest RAM.
public struct MemoryRegionSpec: Sendable {
    /// Where the region starts in guest-physical memory (page-aligned).
    public var start: GuestAddress
    /// Its size in bytes (a multiple of the page size).
    public var size: UInt64
    /// What backs it: anonymous memory, a memfd, or a file.
    public var backing: MemoryBacking
    /// How it is mapped.
    public var options: MemoryRegionOptions

    /// A region of `size` bytes at `start`.
    public init(start: GuestAddress, size: UInt64, backing: MemoryBacking = .anonymous, options: MemoryRegionOptions = []) {
        self.start = start
        self.size = size
        self.backing = backing
        self.options = options
    }
}

/// Why guest memory could not be set up.
public enum MemoryMappingError: Error, Hashable, Sendable, CustomStringConvertible {
    case emptyLayout
    case zeroSize(start: GuestAddress)
    case unaligned(start: GuestAddress, size: UInt64, pageSize: UInt64)
    case overflow(start: GuestAddress, size: UInt64)
    case overlap(GuestAddressRange, GuestAddressRange)
    case systemCall(String, Errno, start: GuestAddress, size: UInt64)

    /// What went wrong, naming the region.
    public var description: String {
        switch self {
        case .emptyLayout: return "guest memory layout has no regions"
        case let .zeroSize(start): return "memory region at \(start) has size 0"
        case let .unaligned(start, size, page):
            return "memory region at \(start) of size \(size) is not aligned to the page size \(page)"
        case let .overflow(start, size): return "memory region at \(start) of size \(size) overflows the address space"
        case let .overlap(a, b): return "memory regions \(a) and \(b) overlap"
        case let .systemCall(call, errno, start, size):
            return "\(call) failed for the memory region at \(start) of size \(size): \(errno)"
        }
    }
}

/// One mapped region of guest RAM. Owns its host mapping (and memfd, if any) and releases
/// them when the last reference goes away.
@safe public final class GuestMemoryRegion: Sendable {
    /// The guest-physical range the region covers.
    public let range: GuestAddressRange
    /// How it is mapped.
    public let options: MemoryRegionOptions
    /// The descriptor behind a memfd- or shared-file-backed region, and the file offset of the
    /// start. Nil for anonymous memory and for a private file mapping (whose descriptor the
    /// caller may close once the region is mapped).
    public let fileDescriptor: FileDescriptor?
    /// Whether the region is private anonymous memory, whose pages read as zero once given
    /// back to the kernel.
    public let isAnonymous: Bool
    /// The pages the VMM wrote, when the region logs them (``MemoryRegionOptions/logWrites``).
    let writeLog: PageWriteLog?
    /// Where in that file the region's first byte is.
    public let fileOffset: Int64
    private let ownsDescriptor: Bool
    // SAFETY: the pointer is written once in init and the mapping lives until deinit.
    nonisolated(unsafe) private let base: UnsafeMutableRawPointer

    /// The host address of the first byte, for registering the region with a hypervisor.
    public var hostAddress: UInt { unsafe UInt(bitPattern: base) }
    /// The region's size in bytes.
    public var size: UInt64 { range.length }
    /// Whether the guest (and the VMM's checked writes) may not write it.
    public var isReadOnly: Bool { options.contains(.readOnly) }

    init(_ spec: MemoryRegionSpec, pageSize: UInt64) throws(MemoryMappingError) {
        guard spec.size > 0 else { throw .zeroSize(start: spec.start) }
        let hugeSize: UInt64 = 2 << 20
        let alignment = spec.options.contains(.hugePages) ? hugeSize : pageSize
        guard spec.start.isAligned(to: alignment), spec.size % alignment == 0 else {
            throw .unaligned(start: spec.start, size: spec.size, pageSize: alignment)
        }
        guard let range = try? GuestAddressRange(start: spec.start, length: spec.size),
              spec.size <= UInt64(Int.max) else {
            throw .overflow(start: spec.start, size: spec.size)
        }
        let fail = { (call: String) -> MemoryMappingError in
            .systemCall(call, Errno(rawValue: errno), start: spec.start, size: spec.size)
        }

        var descriptor: Int32 = -1
        var offset: Int64 = 0
        var owns = false
        var shared = true
        var flags: Int32
        switch spec.backing {
        case .anonymous:
            shared = false
            flags = MAP_PRIVATE | MAP_ANONYMOUS
            if spec.options.contains(.hugePages) { flags |= HV_MAP_HUGETLB }
        case let .memfd(name):
            var memfdFlags = HV_MFD_CLOEXEC
            if spec.options.contains(.hugePages) { memfdFlags |= HV_MFD_HUGETLB }
            descriptor = unsafe hv_memfd_create(name, memfdFlags)
            guard descriptor >= 0 else { throw fail("memfd_create") }
            owns = true
            guard ftruncate(descriptor, off_t(spec.size)) == 0 else {
                let error = fail("ftruncate")
                close(descriptor)
                throw error
            }
            flags = MAP_SHARED
        case let .file(fd, fileOffset):
            descriptor = fd.rawValue
            offset = fileOffset
            flags = MAP_SHARED
        case let .privateFile(fd, fileOffset):
            descriptor = fd.rawValue
            offset = fileOffset
            shared = false
            flags = MAP_PRIVATE
        }
        if spec.options.contains(.noReserve) { flags |= HV_MAP_NORESERVE }
        let protection = spec.options.contains(.readOnly) ? PROT_READ : PROT_READ | PROT_WRITE

        let mapped = unsafe mmap(nil, Int(spec.size), protection, flags, descriptor, off_t(offset))
        guard let mapped = unsafe mapped, unsafe mapped != MAP_FAILED else {
            let error = fail("mmap")
            if owns { close(descriptor) }
            throw error
        }
        if spec.options.contains(.transparentHugePages) {
            // Best effort by definition: a kernel without THP simply keeps small pages.
            _ = unsafe madvise(mapped, Int(spec.size), HV_MADV_HUGEPAGE)
        }
        unsafe self.base = unsafe mapped
        self.range = range
        self.options = spec.options
        self.fileDescriptor = descriptor >= 0 && shared ? FileDescriptor(rawValue: descriptor) : nil
        self.isAnonymous = descriptor < 0
        self.writeLog = spec.options.contains(.logWrites) ? PageWriteLog(regionSize: spec.size) : nil
        self.fileOffset = offset
        self.ownsDescriptor = owns
    }

    deinit {
        // SAFETY: base/size are exactly what mmap returned; nobody can use them after deinit.
        unsafe munmap(base, Int(range.length))
        if ownsDescriptor, let fileDescriptor { close(fileDescriptor.rawValue) }
    }

    /// Zeroes `chunk`, host memory of this region that the caller checked is writable. Whole
    /// pages of a private anonymous mapping go back to the kernel (MADV_DONTNEED) and read as
    /// zero from then on; the partial pages at either end, shared mappings and huge pages are
    /// stored to.
    func zero(_ chunk: UnsafeMutableRawBufferPointer) {
        let page = 4096
        guard isAnonymous, !options.contains(.hugePages), chunk.count >= 4 * page,
              let base = chunk.baseAddress else {
            // SAFETY: the caller checked the chunk lies in this region's writable mapping.
            unsafe chunk.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        let start = Int(bitPattern: base)
        let end = start + chunk.count
        let firstWhole = (start + page - 1) & ~(page - 1), lastWhole = end & ~(page - 1)
        // SAFETY: [start, end) is the checked chunk and firstWhole <= lastWhole lie inside it
        // (it spans at least four pages); the mapping stays, only its pages are replaced.
        unsafe memset(base, 0, firstWhole - start)
        unsafe memset(base + (lastWhole - start), 0, end - lastWhole)
        if unsafe madvise(base + (firstWhole - start), lastWhole - firstWhole, MADV_DONTNEED) != 0 {
            unsafe memset(base + (firstWhole - start), 0, lastWhole - firstWhole)
        }
    }

    /// Host buffer for `[address, address + length)`, which the caller has checked lies in
    /// this region.
    func buffer(at address: GuestAddress, length: UInt64) -> UnsafeMutableRawBufferPointer {
        unsafe Self.hostBuffer(mappedAt: hostAddress, range: range, at: address, length: length)
    }

    /// Host buffer for `[address, address + length)` of the region of guest `range` mapped at
    /// `hostAddress`: the one place a pointer into guest RAM is made, for a region or for its
    /// ``GuestMemoryMmap`` window. The caller has checked the range lies in the region; it is
    /// checked again here, where the pointer is made, so that no caller's mistake can reach
    /// past the mapping: two comparisons on a path that already did the lookup.
    @inlinable
    static func hostBuffer(mappedAt hostAddress: UInt, range: GuestAddressRange, at address: GuestAddress,
                           length: UInt64) -> UnsafeMutableRawBufferPointer {
        let offset = address.rawValue &- range.start.rawValue
        precondition(address >= range.start && offset <= range.length && length <= range.length - offset,
                     "host buffer \(address)+\(length) outside region \(range)")
        // SAFETY: [offset, offset + length) lies inside the mapping of range.length bytes at
        // hostAddress, which lives as long as the region (and the memory object holding it).
        return unsafe UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: hostAddress &+ UInt(offset)), count: Int(length))
    }
}
