import Logging
import Synchronization

/// Why a device could not be registered on a bus.
public enum BusError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The requested range overlaps one that is already registered.
    case overlap(requested: GuestAddressRange, existing: GuestAddressRange)
    /// The range does not fit the bus (port I/O has 64 KiB of ports).
    case outOfSpace(base: GuestAddress, length: UInt64, space: Bus.Space)
    /// No device is registered at that base address.
    case notRegistered(base: GuestAddress)
    /// A registration meant for one address space was made on a bus of the other (ports on
    /// an MMIO bus).
    case wrongSpace(expected: Bus.Space, bus: Bus.Space)

    /// Why the registration was refused, in words.
    public var description: String {
        switch self {
        case let .overlap(requested, existing): return "bus range \(requested) overlaps \(existing)"
        case let .outOfSpace(base, length, space):
            return "bus range at \(base) of length \(length) does not fit the \(space.rawValue) space"
        case let .notRegistered(base): return "no device registered at \(base)"
        case let .wrongSpace(expected, bus): return "a \(expected.rawValue) registration on a \(bus.rawValue) bus"
        }
    }
}

/// An address space of devices: port I/O or MMIO. vCPU run loops hand every exit to
/// ``read(at:width:)`` or ``write(at:width:value:)``; devices register non-overlapping ranges.
///
/// Accesses that hit no device (or straddle the end of one) are handled here: reads return
/// ``unmappedReadValue``, writes are dropped, and both are counted.
public final class Bus: Sendable {
    /// Which address space a bus serves: 16-bit I/O ports, or guest-physical MMIO addresses.
    public enum Space: String, Sendable {
        case pio = "port I/O"
        case mmio = "MMIO"

        var limit: UInt64 { self == .pio ? 0x1_0000 : .max }
    }

    /// What a read of unclaimed space returns: all ones (what a floating x86 bus reads) or zero.
    public enum UnmappedRead: Sendable {
        case allOnes
        case zero
    }

    struct Entry {
        let range: GuestAddressRange
        let device: any BusDevice
    }

    /// The address space this bus serves.
    public let space: Space
    /// What reads of unclaimed addresses return.
    public let unmappedReadValue: UnmappedRead
    private let entries = Locked<[Entry]>([])
    private let unhandledReadCount = Atomic<UInt64>(0)
    private let unhandledWriteCount = Atomic<UInt64>(0)
    private let logger: Logger

    /// An empty bus for `space`.
    public init(space: Space, unmappedReadValue: UnmappedRead = .allOnes, logger: Logger? = nil) {
        self.space = space
        self.unmappedReadValue = unmappedReadValue
        self.logger = logger ?? Logger(label: "hvkit.bus.\(space == .pio ? "pio" : "mmio")")
    }

    /// Reads that hit no device so far.
    public var unhandledReads: UInt64 { unhandledReadCount.load(ordering: .relaxed) }
    /// Writes that hit no device so far.
    public var unhandledWrites: UInt64 { unhandledWriteCount.load(ordering: .relaxed) }

    /// Registers `device` for `length` bytes starting at `base`.
    public func register(_ device: any BusDevice, at base: GuestAddress, length: UInt64) throws(BusError) {
        guard let range = try? GuestAddressRange(start: base, length: length),
              range.lastAddress.rawValue < space.limit else {
            throw .outOfSpace(base: base, length: length, space: space)
        }
        try entries.withLock { (entries) throws(BusError) in
            if let clash = entries.first(where: { $0.range.overlaps(range) }) {
                throw .overlap(requested: range, existing: clash.range)
            }
            let index = entries.firstIndex { $0.range.start > range.start } ?? entries.endIndex
            entries.insert(Entry(range: range, device: device), at: index)
        }
    }

    /// Removes the device registered at `base` and returns it.
    @discardableResult
    public func unregister(at base: GuestAddress) throws(BusError) -> any BusDevice {
        try entries.withLock { (entries) throws(BusError) in
            guard let index = entries.firstIndex(where: { $0.range.start == base }) else {
                throw .notRegistered(base: base)
            }
            return entries.remove(at: index).device
        }
    }

    /// The registered ranges, sorted.
    public var registeredRanges: [GuestAddressRange] { entries.withLock { $0.map(\.range) } }

    /// The device and offset for an access of `width` bytes at `address`, if one device
    /// covers all of it.
    func resolve(_ address: GuestAddress, width: AccessWidth) -> (any BusDevice, UInt64)? {
        guard let last = address.adding(UInt64(width.byteCount - 1)) else { return nil }
        return entries.withLock { entries in
            guard let index = indexOfRange(containing: address, in: entries, range: { $0.range }) else { return nil }
            let range = entries[index].range
            guard last <= range.lastAddress else { return nil }
            return (entries[index].device, address.rawValue - range.start.rawValue)
        }
    }

    /// Dispatches a read; returns the device's value masked to `width`.
    public func read(at address: GuestAddress, width: AccessWidth) -> UInt64 {
        if let (device, offset) = resolve(address, width: width) {
            return device.read(offset: offset, width: width) & width.mask
        }
        unhandledReadCount.add(1, ordering: .relaxed)
        logger.trace("unhandled read", metadata: ["address": "\(address)", "width": "\(width.byteCount)"])
        return unmappedReadValue == .allOnes ? width.mask : 0
    }

    /// Dispatches a write of the low `width` bytes of `value`.
    public func write(at address: GuestAddress, width: AccessWidth, value: UInt64) {
        if let (device, offset) = resolve(address, width: width) {
            device.write(offset: offset, width: width, value: value & width.mask)
            return
        }
        unhandledWriteCount.add(1, ordering: .relaxed)
        logger.trace("unhandled write", metadata: ["address": "\(address)", "width": "\(width.byteCount)"])
    }
}
