import Glibc
import HVCore
import SystemPackage

/// Solo5-style block storage over a file or block device: ``HypercallNumber/blockRead``,
/// ``HypercallNumber/blockWrite`` and ``HypercallNumber/blockFlush``.
///
/// Offsets and lengths are whole sectors (``HypercallABI/blockSectorSize``), a transfer is at
/// most ``HypercallABI/maximumBlockTransfer`` bytes, and the range must lie inside the disk.
/// Data moves with pread/pwrite straight between the file and guest RAM, after the whole
/// guest buffer is checked as RAM (writable RAM for a read).
///
/// Errors: EINVAL (unaligned or empty), E2BIG (too long), ERANGE (beyond the disk), EFAULT
/// (buffer not RAM), EROFS (write to a read-only disk), EIO (the host call failed).
public final class BlockService: ParavirtService {
    /// The disk, open.
    public let fileDescriptor: FileDescriptor
    /// Whether the guest may only read.
    public let isReadOnly: Bool
    /// The disk's size in bytes, rounded down to whole sectors.
    public let capacity: UInt64
    private let ownsDescriptor: Bool

    /// Opens `path` (read-write unless `readOnly`).
    public convenience init(path: FilePath, readOnly: Bool = false) throws(BlockServiceError) {
        let descriptor: FileDescriptor
        do {
            descriptor = try FileDescriptor.open(path, readOnly ? .readOnly : .readWrite, options: [.closeOnExec])
        } catch {
            throw .open(path: path.string, (error as? Errno) ?? .ioError)
        }
        do {
            try self.init(fileDescriptor: descriptor, readOnly: readOnly, ownsDescriptor: true)
        } catch {
            try? descriptor.close()
            throw error
        }
    }

    /// Opens the file at `path` (a `String`, as every HVKit API that takes a path also
    /// accepts), as the `FilePath` initializer does.
    public convenience init(path: String, readOnly: Bool = false) throws(BlockServiceError) {
        try self.init(path: FilePath(path), readOnly: readOnly)
    }

    /// Serves an open descriptor; closes it at deinit when `ownsDescriptor`.
    public init(fileDescriptor: FileDescriptor, readOnly: Bool, ownsDescriptor: Bool = false) throws(BlockServiceError) {
        // lseek to the end gives the size of regular files and block devices alike.
        let end = lseek(fileDescriptor.rawValue, 0, SEEK_END)
        guard end >= 0 else { throw .size(Errno(rawValue: errno)) }
        self.fileDescriptor = fileDescriptor
        self.isReadOnly = readOnly
        self.ownsDescriptor = ownsDescriptor
        capacity = UInt64(end) / UInt64(HypercallABI.blockSectorSize) * UInt64(HypercallABI.blockSectorSize)
    }

    deinit {
        if ownsDescriptor { try? fileDescriptor.close() }
    }

    /// Adds block_read, block_write and block_flush, and the disk's size and sector to the info block.
    public func install(into table: inout HypercallTable) throws(HypercallTableError) {
        table.info.features.insert(.block)
        if isReadOnly { table.info.features.insert(.blockReadOnly) }
        table.info.sectorSize = UInt32(HypercallABI.blockSectorSize)
        table.info.blockCapacity = capacity
        try table.register(.blockRead, name: "block_read") { [self] call throws(HypercallError) in
            try transfer(call, write: false)
        }
        try table.register(.blockWrite, name: "block_write") { [self] call throws(HypercallError) in
            try transfer(call, write: true)
        }
        try table.register(.blockFlush, name: "block_flush") { [self] _ throws(HypercallError) in
            guard !isReadOnly else { return .zero }
            while fdatasync(fileDescriptor.rawValue) != 0 {
                guard errno == EINTR else { throw HypercallError(.io, "fdatasync: \(Errno(rawValue: errno))") }
            }
            return .zero
        }
    }

    /// Checks a read or write request (a0 disk offset, a1 guest buffer, a2 length) and moves
    /// the data.
    private func transfer(_ call: HypercallCall, write: Bool) throws(HypercallError) -> HypercallResult {
        let (offset, length) = (call.arguments.a0, call.arguments.a2)
        let sector = UInt64(HypercallABI.blockSectorSize)
        guard length > 0, offset % sector == 0, length % sector == 0 else {
            throw HypercallError(.invalid, "block offset \(offset) and length \(length) must be non-zero multiples of \(sector)")
        }
        guard length <= UInt64(HypercallABI.maximumBlockTransfer) else {
            throw HypercallError(.tooBig, "block transfer of \(length) bytes (at most \(HypercallABI.maximumBlockTransfer))")
        }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= capacity else {
            throw HypercallError(.outOfRange, "block range \(offset)+\(length) is outside the disk of \(capacity) bytes")
        }
        guard !(write && isReadOnly) else { throw HypercallError(.readOnly, "block write to a read-only disk") }
        // A read fills guest memory, so its buffer must be writable RAM.
        let buffers = unsafe try call.hostBuffers(at: call.address(1), length: Int(length), for: write ? .read : .write)
        var position = Int(offset)
        for unsafe buffer in unsafe buffers {
            guard let base = buffer.baseAddress else { continue }
            var done = 0
            while done < buffer.count {
                // SAFETY: the buffer is guest RAM checked by hostBuffers; the call's memory keeps it mapped.
                let moved = unsafe write
                    ? pwrite(fileDescriptor.rawValue, base + done, buffer.count - done, position)
                    : pread(fileDescriptor.rawValue, base + done, buffer.count - done, position)
                if moved < 0 {
                    if errno == EINTR { continue }
                    throw HypercallError(.io, "\(write ? "pwrite" : "pread") at \(position): \(Errno(rawValue: errno))")
                }
                guard moved > 0 else {
                    throw HypercallError(.io, "\(write ? "pwrite" : "pread") at \(position): end of file (the disk shrank)")
                }
                done += moved
                position += moved
            }
        }
        return .value(length)
    }
}

/// Why a disk could not be served.
public enum BlockServiceError: Error, Hashable, Sendable, CustomStringConvertible {
    case open(path: String, Errno)
    case size(Errno)

    /// What failed, with the path and the system's error.
    public var description: String {
        switch self {
        case let .open(path, errno): return "cannot open disk \(path): \(errno)"
        case let .size(errno): return "cannot find the disk's size: \(errno)"
        }
    }
}
