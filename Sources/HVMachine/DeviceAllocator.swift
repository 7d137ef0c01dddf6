import HVCore

/// Hands out MMIO windows and interrupt lines (GSIs) to devices, so that no two windows
/// overlap and every device gets a line. Windows are page-aligned and never reused; GSIs are
/// given in the configured order and then shared round robin (virtio-mmio interrupts may be
/// shared: the driver reads each device's InterruptStatus).
public struct DeviceAllocator: Sendable {
    /// The first address windows are taken from.
    public let areaStart: GuestAddress
    /// The bytes available from ``areaStart``.
    public let areaSize: UInt64
    /// The GSIs handed out, in order.
    public let interrupts: [UInt32]
    private var nextOffset: UInt64 = 0
    private var interruptsGiven = 0

    /// An allocator over `areaSize` bytes from `areaStart`, handing out `interrupts`.
    public init(areaStart: GuestAddress, areaSize: UInt64, interrupts: [UInt32]) {
        self.areaStart = areaStart
        self.areaSize = areaSize
        self.interrupts = interrupts
    }

    /// The next free window of `size` bytes, aligned to `alignment` (a power of two, at least
    /// 4 KiB). Throws when the area is full.
    public mutating func allocateWindow(size: UInt64, alignment: UInt64 = 0x1000) throws(MachineError) -> GuestAddressRange {
        guard size > 0, alignment >= 0x1000, alignment & (alignment - 1) == 0 else {
            throw MachineError(.addDevice, reason: "window of \(size) bytes aligned to \(alignment): need a size and a power-of-two alignment of at least 4 KiB")
        }
        let aligned = (nextOffset + alignment - 1) & ~(alignment - 1)
        // Sizes are rounded to whole pages so that the next window starts on one.
        let pages = (size + 0xFFF) & ~UInt64(0xFFF)
        guard pages >= size, aligned <= areaSize, pages <= areaSize - aligned,
              let start = areaStart.adding(aligned),
              let range = try? GuestAddressRange(start: start, length: size) else {
            throw MachineError(.addDevice, reason: "no room for a \(size)-byte window: \(areaSize - min(nextOffset, areaSize)) bytes left from \(areaStart)")
        }
        nextOffset = aligned + pages
        return range
    }

    /// The next interrupt line: each configured GSI once, then shared in the same order.
    public mutating func allocateInterrupt() -> UInt32 {
        defer { interruptsGiven += 1 }
        return interrupts[interruptsGiven % interrupts.count]
    }

    /// Whether the last interrupt handed out is shared with an earlier device.
    public var interruptsAreShared: Bool { interruptsGiven > interrupts.count }
}
