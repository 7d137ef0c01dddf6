import Glibc
import SystemPackage

/// Guest RAM made of host mappings: several regions, with holes between them where devices
/// live. Immutable once created, so it is shared freely between vCPU and device threads.
public final class GuestMemoryMmap: GuestMemory {
    /// The regions, sorted by guest address.
    public let regions: [GuestMemoryRegion]
    /// Each region's guest range, in the order of ``regions`` (sorted by address).
    public let ramRanges: [GuestAddressRange]
    /// What an access needs of each region, in the order of ``regions``, as plain values: the
    /// lookup on every access then retains and releases no region object. That reference
    /// counting was half of a lookup's time (28 ns), and virtio devices look up guest memory
    /// for every descriptor, ring entry and buffer (about 17 times per block request, 54 times
    /// per 18-descriptor network frame).
    @usableFromInline let windows: [RegionWindow]
    /// This mapping's own identity: its regions stay mapped at the same host addresses for its
    /// whole life.
    public let hostMappingIdentity: HostMappingIdentity?

    /// The host's page size, which every region start and size must be a multiple of.
    public static var pageSize: UInt64 { UInt64(sysconf(Int32(_SC_PAGESIZE))) }

    /// Maps every region of `layout`. Refuses an empty layout, empty, unaligned, overflowing
    /// or overlapping regions; on error nothing stays mapped.
    public init(_ layout: [MemoryRegionSpec]) throws(MemoryMappingError) {
        guard !layout.isEmpty else { throw .emptyLayout }
        let page = Self.pageSize
        let sorted = layout.sorted { $0.start < $1.start }
        var regions: [GuestMemoryRegion] = []
        for spec in sorted {
            let region = try GuestMemoryRegion(spec, pageSize: page)
            if let previous = regions.last, previous.range.overlaps(region.range) {
                throw .overlap(previous.range, region.range)
            }
            regions.append(region)
        }
        self.regions = regions
        self.ramRanges = regions.map(\.range)
        self.windows = regions.map(RegionWindow.init)
        hostMappingIdentity = .next()
    }

    /// One anonymous region of `size` bytes at guest address 0.
    public convenience init(size: UInt64, options: MemoryRegionOptions = []) throws(MemoryMappingError) {
        try self.init([MemoryRegionSpec(start: GuestAddress(0), size: size, options: options)])
    }

    /// How many bytes of guest RAM are resident in host memory now, from mincore over every
    /// region: what a VMM takes away from its own resident set to see its overhead. Throws the
    /// errno of a failed mincore.
    public func residentBytes() throws(Errno) -> UInt64 {
        let page = Self.pageSize
        // A window of 1 GiB at a time keeps the page vector at 256 KiB for any size of RAM.
        let window: UInt64 = 1 << 30
        var vector = [UInt8](repeating: 0, count: Int(window / page))
        var resident: UInt64 = 0
        for region in regions {
            var offset: UInt64 = 0
            while offset < region.size {
                let length = min(window, region.size - offset)
                // SAFETY: [hostAddress + offset, + length) lies inside the region's live mapping,
                // and vector has a byte for each of its pages.
                guard unsafe mincore(UnsafeMutableRawPointer(bitPattern: region.hostAddress + UInt(offset)), Int(length), &vector) == 0 else {
                    throw Errno(rawValue: errno)
                }
                resident += UInt64(vector[..<Int(length / page)].reduce(0) { $0 + Int($1 & 1) }) * page
                offset += length
            }
        }
        return resident
    }

    /// Fills `length` bytes at `address` with `value`, refusing what ``GuestMemory``'s accessors
    /// refuse. Zeroing gives the whole pages of private anonymous regions back to the kernel
    /// (MADV_DONTNEED), which zero-fills them on their next touch: one system call instead of a
    /// page fault per page, which on an emulating host costs microseconds each (a loader's
    /// BSS, page tables). Shared regions (memfd, files) and private file mappings (a restored
    /// snapshot) keep their pages and are stored to.
    public func fill(_ value: UInt8, at address: GuestAddress, length: UInt64) throws(GuestMemoryError) {
        guard value == 0 else { return try storeFill(value, at: address, length: length) }
        try withExtendedLifetime(self) { () throws(GuestMemoryError) in
            unsafe try forEachChunk(at: address, length: length, for: .write) { chunk, offset throws(GuestMemoryError) in
                let start = GuestAddress(address.rawValue &+ UInt64(offset))
                if let region = region(containing: start) {
                    unsafe region.zero(chunk)
                } else {
                    // SAFETY: the chunk is writable guest RAM checked by unsafeHostBuffer.
                    unsafe chunk.initializeMemory(as: UInt8.self, repeating: 0)
                }
            }
        }
    }

    /// The pages of each region (indices from the region's start, ascending) the VMM wrote
    /// since the last call, for regions that log writes (``MemoryRegionOptions/logWrites``;
    /// empty for the others); clears the logs. A page is logged when a host buffer for writing
    /// is handed out, so read this only once those writes are done (a snapshot does, after
    /// the devices came to rest).
    public func takeWrittenPages() -> [[UInt64]] {
        regions.map { $0.writeLog?.takePages() ?? [] }
    }

    /// The region that contains `address`, if any.
    public func region(containing address: GuestAddress) -> GuestMemoryRegion? {
        // ramRanges[i] is regions[i].range; a closure, not a key path, keeps the search inlined.
        indexOfRange(containing: address, in: ramRanges, range: { $0 }).map { regions[$0] }
    }

    /// A host pointer to `length` bytes of guest RAM at `address`, checked to lie inside one region that allows `access`. Valid while this memory object lives; the guest may change the bytes at any time.
    ///
    /// Inlinable: the common case (one region holds the range and the access needs nothing of
    /// it) is a search of plain values that inlines into a device's queue walk, which checks
    /// every descriptor with it. The rest is out of line.
    @inlinable
    public func unsafeHostBuffer(
        at address: GuestAddress, length: UInt64, for access: MemoryAccess
    ) throws(GuestMemoryError) -> UnsafeMutableRawBufferPointer {
        let requested = try GuestAddressRange(start: address, length: length)
        guard let index = indexOfRange(containing: address, in: windows, range: { $0.range }) else {
            throw .outOfBounds(address: address, length: length)
        }
        let window = windows[index]
        if window.range.contains(requested), access == .read || !window.writesNeedTheRegion {
            // The common case, with no region object touched.
            return unsafe GuestMemoryRegion.hostBuffer(mappedAt: window.hostAddress, range: window.range, at: address, length: length)
        }
        return try unsafe regionHostBuffer(index: index, requested: requested, for: access)
    }

    /// ``unsafeHostBuffer(at:length:for:)`` through region `index`, the one holding the
    /// range's start: a range that leaves it, or a write the region refuses or records.
    @usableFromInline
    func regionHostBuffer(
        index: Int, requested: GuestAddressRange, for access: MemoryAccess
    ) throws(GuestMemoryError) -> UnsafeMutableRawBufferPointer {
        let address = requested.start, length = requested.length
        let region = regions[index]
        guard region.range.contains(requested) else {
            // Distinguish a hole from a neighbouring region, because callers that can split
            // a copy (see GuestMemory.read(into:from:)) handle only the second.
            let next = region.range.end.flatMap { self.region(containing: $0) }
            throw next == nil
                ? .crossesHole(address: address, length: length)
                : .crossesRegionBoundary(address: address, length: length)
        }
        if access == .write {
            if region.isReadOnly { throw .readOnly(address: address, length: length) }
            region.writeLog?.mark(offset: address.rawValue - region.range.start.rawValue, length: length)
        }
        return unsafe region.buffer(at: address, length: length)
    }
}

/// A region as the access path sees it: its range, where it is mapped, and whether a write
/// must go through the region itself (a read-only region refuses it, a logging one records it).
@usableFromInline struct RegionWindow: Sendable {
    @usableFromInline let range: GuestAddressRange
    @usableFromInline let hostAddress: UInt
    @usableFromInline let writesNeedTheRegion: Bool

    init(_ region: GuestMemoryRegion) {
        range = region.range
        hostAddress = region.hostAddress
        writesNeedTheRegion = region.isReadOnly || region.writeLog != nil
    }
}
