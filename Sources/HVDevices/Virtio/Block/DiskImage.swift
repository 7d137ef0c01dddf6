import CHVDevicesShims
import Glibc
import SystemPackage

/// Why a disk could not be opened.
public enum DiskImageError: Error, Hashable, Sendable, CustomStringConvertible {
    case open(path: String, Errno)
    case size(path: String, Errno)
    /// The file is smaller than one sector.
    case empty(path: String)

    /// What failed, with the path and the system's error.
    public var description: String {
        switch self {
        case let .open(path, errno): "cannot open disk \(path): \(errno)"
        case let .size(path, errno): "cannot find the size of disk \(path): \(errno)"
        case let .empty(path): "disk \(path) is smaller than one 512-byte sector"
        }
    }
}

/// A file or block device opened as a disk. Owns its descriptor.
public final class DiskImage: Sendable {
    /// virtio-blk's sector: capacities and offsets count 512-byte sectors.
    public static let sectorSize: UInt64 = 512

    /// The image's path, for messages.
    public let path: String
    /// The open image, closed when this object goes away.
    public let fileDescriptor: FileDescriptor
    /// Bytes the guest can address: the file's size rounded down to whole sectors.
    public let capacity: UInt64
    /// Whether the image was opened read-only (the device then refuses writes).
    public let isReadOnly: Bool
    /// How writes reach the file.
    public let cacheMode: BlockCacheMode
    /// Whether the file was opened O_DIRECT (guest buffers must then be sector-aligned, which
    /// Linux's are; a misaligned request fails with IOERR).
    public let isDirect: Bool

    /// Opens `path`.
    /// - Parameters:
    ///   - path: the image file or block device.
    ///   - readOnly: open read-only; the device refuses writes with IOERR.
    ///   - cacheMode: see ``BlockCacheMode``; writethrough opens the file O_DSYNC.
    ///   - direct: bypass the host page cache (O_DIRECT).
    public init(path: String, readOnly: Bool = false, cacheMode: BlockCacheMode = .writeback, direct: Bool = false) throws(DiskImageError) {
        var flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC
        if direct { flags |= HVD_O_DIRECT }
        if cacheMode == .writethrough, !readOnly { flags |= O_DSYNC }
        let fd = unsafe open(path, flags)
        guard fd >= 0 else { throw .open(path: path, Errno(rawValue: errno)) }
        var info = stat()
        guard unsafe fstat(fd, &info) == 0 else {
            let error = Errno(rawValue: errno)
            close(fd)
            throw .size(path: path, error)
        }
        var bytes = UInt64(max(info.st_size, 0))
        if info.st_mode & S_IFMT == S_IFBLK {
            guard unsafe ioctl(fd, HVD_BLKGETSIZE64, &bytes) == 0 else {
                let error = Errno(rawValue: errno)
                close(fd)
                throw .size(path: path, error)
            }
        }
        let capacity = bytes / Self.sectorSize * Self.sectorSize
        guard capacity > 0 else {
            close(fd)
            throw .empty(path: path)
        }
        self.path = path
        fileDescriptor = FileDescriptor(rawValue: fd)
        self.capacity = capacity
        isReadOnly = readOnly
        self.cacheMode = cacheMode
        isDirect = direct
    }

    /// Opens the image at `path`, given as a `FilePath`, as the `String` initializer does.
    public convenience init(path: FilePath, readOnly: Bool = false, cacheMode: BlockCacheMode = .writeback, direct: Bool = false) throws(DiskImageError) {
        try self.init(path: path.string, readOnly: readOnly, cacheMode: cacheMode, direct: direct)
    }

    deinit {
        close(fileDescriptor.rawValue)
    }

    /// Makes everything written to the image so far durable on the host (fdatasync, retried
    /// on EINTR). A read-only image has nothing to flush. Call it after the device has no
    /// request in flight (``BlockDevice/reset()`` waits for them) to lose nothing.
    public func flush() throws(Errno) {
        guard !isReadOnly else { return }
        while fdatasync(fileDescriptor.rawValue) != 0 {
            guard errno == EINTR else { throw Errno(rawValue: errno) }
        }
    }

    /// Makes the file's data durable: fdatasync, retried on EINTR.
    func synchronize() -> BlockStatus {
        while fdatasync(fileDescriptor.rawValue) != 0 {
            if errno != EINTR { return .ioError }
        }
        return .ok
    }

    /// Punches a hole (discard) or zeroes a range. Falls back to writing zeroes when the file
    /// system lacks FALLOC_FL_ZERO_RANGE.
    func deallocate(offset: UInt64, length: UInt64, zero: Bool, mayUnmap: Bool) -> BlockStatus {
        guard !isReadOnly else { return .ioError }
        let keep = HVD_FALLOC_FL_KEEP_SIZE
        if zero {
            let mode = mayUnmap ? (HVD_FALLOC_FL_PUNCH_HOLE | keep) : HVD_FALLOC_FL_ZERO_RANGE
            if fallocate(mode, offset, length) == 0 { return .ok }
            return writeZeroes(offset: offset, length: length)
        }
        if fallocate(HVD_FALLOC_FL_PUNCH_HOLE | keep, offset, length) == 0 { return .ok }
        // Discard is a hint; a file system without hole punching reports UNSUPP.
        return errno == EOPNOTSUPP ? .unsupported : .ioError
    }

    private func fallocate(_ mode: Int32, _ offset: UInt64, _ length: UInt64) -> Int32 {
        while true {
            let result = hvd_fallocate(fileDescriptor.rawValue, mode, Int64(offset), Int64(length))
            if result == 0 || errno != EINTR { return result }
        }
    }

    private func writeZeroes(offset: UInt64, length: UInt64) -> BlockStatus {
        let chunk = 64 << 10
        let zeroes = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { unsafe zeroes.deallocate() }
        unsafe zeroes.initializeMemory(as: UInt8.self, repeating: 0)
        var done: UInt64 = 0
        while done < length {
            let piece = Int(min(UInt64(chunk), length - done))
            guard unsafe positionalIO(.write, UnsafeMutableRawBufferPointer(rebasing: zeroes[..<piece]), offset: offset + done) else {
                return .ioError
            }
            done += UInt64(piece)
        }
        return .ok
    }

    enum Direction { case read, write }

    /// Reads or writes all of `buffer` at `offset`, going on after short transfers.
    func positionalIO(_ direction: Direction, _ buffer: UnsafeMutableRawBufferPointer, offset: UInt64) -> Bool {
        guard let base = buffer.baseAddress else { return true }
        var done = 0
        while done < buffer.count {
            let position = off_t(offset + UInt64(done))
            let result = unsafe direction == .read
                ? pread(fileDescriptor.rawValue, base + done, buffer.count - done, position)
                : pwrite(fileDescriptor.rawValue, base + done, buffer.count - done, position)
            if result < 0 {
                if errno == EINTR { continue }
                return false
            }
            // Reading past the end cannot happen inside the capacity unless the file shrank.
            if result == 0 { return false }
            done += result
        }
        return true
    }
}
