import Glibc
import SystemPackage

/// Where one region of guest RAM lies in a snapshot's memory file.
public struct SnapshotMemoryRegion: Sendable, Hashable, SnapshotCodable {
    /// The region's guest-physical start.
    public var start: GuestAddress
    /// Its size in bytes.
    public var size: UInt64
    /// Where its first byte is in the memory file.
    public var fileOffset: UInt64

    /// A region of `size` bytes at `start`, stored from `fileOffset`.
    public init(start: GuestAddress, size: UInt64, fileOffset: UInt64) {
        self.start = start
        self.size = size
        self.fileOffset = fileOffset
    }

    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        encoder.append(start.rawValue)
        encoder.append(size)
        encoder.append(fileOffset)
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        start = GuestAddress(try decoder.read(UInt64.self))
        size = try decoder.read(UInt64.self)
        fileOffset = try decoder.read(UInt64.self)
    }
}

extension GuestMemoryMmap {
    /// Where each region goes in a memory file written by ``writeSnapshot(to:path:)``: one
    /// after the other from offset 0.
    public var snapshotLayout: [SnapshotMemoryRegion] {
        var offset: UInt64 = 0
        return regions.map { region in
            defer { offset += region.size }
            return SnapshotMemoryRegion(start: region.range.start, size: region.size, fileOffset: offset)
        }
    }

    /// Writes every region into `file` (empty, opened for writing) at the offsets of
    /// ``snapshotLayout``, leaving holes where pages are zero, so the file is sparse and a
    /// guest that touched little costs little disk. Returns the bytes written (the rest are
    /// holes). The vCPUs and devices must be stopped: a page changing while it is copied
    /// would be saved half old, half new.
    @discardableResult
    public func writeSnapshot(to file: FileDescriptor, path: String) throws(SnapshotError) -> UInt64 {
        let layout = snapshotLayout
        var written: UInt64 = 0
        for (region, place) in zip(regions, layout) {
            written += try Self.writePages(of: region, to: file, at: place.fileOffset, path: path)
        }
        let total = layout.last.map { $0.fileOffset + $0.size } ?? 0
        guard ftruncate(file.rawValue, off_t(total)) == 0 else {
            throw .io(operation: "ftruncate", path: path, Errno(rawValue: errno))
        }
        return written
    }

    /// Writes only `pages` of each region (page indices from the region's start, ascending,
    /// one list per region as ``takeWrittenPages()`` gives them) into `file`, one after another
    /// in that order, region by region: a diff snapshot's memory, dense, so that writing it and
    /// later replacing it costs no more than its size. Returns the bytes written.
    @discardableResult
    public func writeSnapshot(to file: FileDescriptor, path: String, pages: [[UInt64]]) throws(SnapshotError) -> UInt64 {
        let page = Self.pageSize
        // The runs go one after another in the file: up to IOV_MAX of them per pwritev, so a
        // diff of scattered pages costs a few system calls, not one per page.
        var vectors: [iovec] = unsafe []
        var written: UInt64 = 0
        for (index, region) in regions.enumerated() where index < pages.count {
            for run in Self.runs(pages[index]) where run.start < region.size / page {
                let count = min(run.count, region.size / page - run.start)
                // SAFETY: the run's pages lie inside the region's live mapping (checked against its size).
                let base = unsafe UnsafeMutableRawPointer(bitPattern: region.hostAddress + UInt(run.start * page))
                unsafe vectors.append(unsafe iovec(iov_base: base, iov_len: Int(count * page)))
                if unsafe vectors.count == Self.vectorLimit {
                    written += unsafe try Self.writeVectors(&vectors, to: file, at: written, path: path)
                }
            }
        }
        written += unsafe try Self.writeVectors(&vectors, to: file, at: written, path: path)
        return written
    }

    /// IOV_MAX on Linux: the most vectors one pwritev takes.
    static let vectorLimit = 1024

    /// Writes every byte `vectors` describe at `offset` with pwritev, going on after partial
    /// writes; empties `vectors` and returns the bytes written.
    private static func writeVectors(_ vectors: inout [iovec], to file: FileDescriptor, at offset: UInt64, path: String) throws(SnapshotError) -> UInt64 {
        defer { unsafe vectors.removeAll(keepingCapacity: true) }
        var done: UInt64 = 0
        var first = 0
        while unsafe first < vectors.count {
            // SAFETY: every vector points into a live region of guest RAM (see the caller).
            let result = unsafe vectors.withUnsafeBufferPointer { buffer in
                unsafe pwritev(file.rawValue, buffer.baseAddress.map { unsafe $0 + first }, Int32(buffer.count - first), off_t(offset + done))
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "pwritev", path: path, Errno(rawValue: errno))
            }
            done += UInt64(result)
            // Skip what was written: whole vectors, then part of the next.
            var left = result
            while unsafe first < vectors.count, unsafe left >= vectors[first].iov_len {
                left -= unsafe vectors[first].iov_len
                first += 1
            }
            if left > 0, unsafe first < vectors.count {
                unsafe vectors[first].iov_base = unsafe vectors[first].iov_base.map { unsafe $0 + left }
                unsafe vectors[first].iov_len -= left
            }
        }
        return done
    }

    /// Ascending page indices as runs of consecutive pages.
    public static func runs(_ pages: [UInt64]) -> [(start: UInt64, count: UInt64)] {
        var runs: [(start: UInt64, count: UInt64)] = []
        for page in pages {
            if let last = runs.last, last.start + last.count == page {
                runs[runs.count - 1].count += 1
            } else {
                runs.append((page, 1))
            }
        }
        return runs
    }

    /// Writes the non-zero pages of `region`, each run of them with one pwrite.
    private static func writePages(of region: GuestMemoryRegion, to file: FileDescriptor, at fileOffset: UInt64, path: String) throws(SnapshotError) -> UInt64 {
        let page = Int(pageSize)
        let count = Int(region.size) / page
        // Pages never touched in an anonymous region are zero; mincore says which were, so an
        // untouched gigabyte is not read at all. (In a private file mapping a page that is not
        // resident may still hold the file's bytes, so those regions are read in full.)
        var resident = [UInt8](repeating: 1, count: count)
        if region.isAnonymous {
            // SAFETY: the region's mapping is live for `region.size` bytes and `resident` has a
            // byte per page.
            if unsafe mincore(UnsafeMutableRawPointer(bitPattern: region.hostAddress), Int(region.size), &resident) != 0 {
                resident = [UInt8](repeating: 1, count: count)
            }
        }
        var written: UInt64 = 0
        var runStart: Int?
        for index in 0...count {
            // SAFETY: page `index` (< count) lies inside the region's live mapping.
            let keep = unsafe index < count && resident[index] & 1 == 1
                && !isZero(UnsafeRawPointer(bitPattern: region.hostAddress + UInt(index * page)), count: page)
            if keep {
                if runStart == nil { runStart = index }
                continue
            }
            guard let start = runStart else { continue }
            runStart = nil
            let length = (index - start) * page
            // SAFETY: pages [start, index) lie inside the region's live mapping.
            let source = unsafe UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: region.hostAddress + UInt(start * page)), count: length)
            do {
                _ = unsafe try file.writeAll(toAbsoluteOffset: Int64(fileOffset) + Int64(start * page), source)
            } catch {
                throw .io(operation: "write", path: path, Errno(converting: error))
            }
            written += UInt64(length)
        }
        return written
    }

    private static func isZero(_ pointer: UnsafeRawPointer?, count: Int) -> Bool {
        guard let pointer = unsafe pointer else { return true }
        var offset = 0
        while offset < count {
            // SAFETY: offset + 8 <= count (a page is a multiple of 8 bytes) inside the caller's range.
            if unsafe pointer.loadUnaligned(fromByteOffset: offset, as: UInt64.self) != 0 { return false }
            offset += 8
        }
        return true
    }

    /// Copies a snapshot's memory file into this memory (regions laid out as `layout`, which
    /// must match this memory's): an eager restore, for when the file may go away or change,
    /// or page faults on first touch cost more than reading everything now. Only the file's
    /// data is read; its holes are zero already in fresh anonymous memory.
    public func readSnapshot(from file: FileDescriptor, path: String, layout: [SnapshotMemoryRegion]) throws(SnapshotError) {
        guard layout.count == regions.count, zip(layout, regions).allSatisfy({ $0.start == $1.range.start && $0.size == $1.size }) else {
            throw .incompatible("the memory file \(path) is laid out for other memory")
        }
        for (place, region) in zip(layout, regions) {
            var offset = Int(place.fileOffset)
            let end = Int(place.fileOffset + place.size)
            while offset < end {
                // The next stretch of data, then the hole after it (SEEK_DATA, SEEK_HOLE).
                let data = lseek(file.rawValue, offset, 3)
                guard data >= 0, data < end else { break }
                let hole = min(lseek(file.rawValue, data, 4), end)
                guard hole > data else { break }
                let target = region.hostAddress + UInt(data - Int(place.fileOffset))
                // SAFETY: [data, hole) lies inside this region's part of the file, so its
                // bytes land inside the region's live mapping.
                let buffer = unsafe UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: target), count: hole - data)
                do {
                    var done = 0
                    while done < buffer.count {
                        let got = unsafe try file.read(fromAbsoluteOffset: Int64(data + done), into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
                        guard got > 0 else { throw Errno.ioError }
                        done += got
                    }
                } catch {
                    throw .io(operation: "read", path: path, Errno(converting: error))
                }
                offset = hole
            }
        }
    }

    /// The layout to map a snapshot's memory file back: each region of `layout` backed by
    /// `file`, private (copy-on-write) at its offset, so pages are read when the guest first
    /// touches them. Checks that the file is long enough for every region.
    public static func restoredLayout(
        _ layout: [SnapshotMemoryRegion], file: FileDescriptor, path: String, options: MemoryRegionOptions = []
    ) throws(SnapshotError) -> [MemoryRegionSpec] {
        var status = stat()
        guard unsafe fstat(file.rawValue, &status) == 0 else {
            throw .io(operation: "fstat", path: path, Errno(rawValue: errno))
        }
        let length = UInt64(max(status.st_size, 0))
        return try layout.map { region throws(SnapshotError) in
            let (end, overflow) = region.fileOffset.addingReportingOverflow(region.size)
            guard !overflow, end <= length, region.fileOffset <= UInt64(Int64.max) else {
                throw .incompatible("the memory file \(path) is \(length) bytes; the region at \(region.start) needs \(region.size) bytes from offset \(region.fileOffset)")
            }
            return MemoryRegionSpec(start: region.start, size: region.size,
                                    backing: .privateFile(file, offset: Int64(region.fileOffset)), options: options)
        }
    }
}
