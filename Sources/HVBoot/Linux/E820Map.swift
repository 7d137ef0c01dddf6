import HVCore

/// One entry of the BIOS-style memory map a Linux guest reads from its zero page.
public struct E820Entry: Sendable, Hashable, CustomStringConvertible {
    /// What a range of the map is.
    public enum Kind: UInt32, Sendable {
        case ram = 1
        case reserved = 2
    }

    /// The first byte of the range.
    public let start: UInt64
    /// The range's size in bytes.
    public let length: UInt64
    /// What the range is.
    public let kind: Kind

    /// A range of `length` bytes from `start` of `kind`.
    public init(start: UInt64, length: UInt64, kind: Kind) {
        self.start = start
        self.length = length
        self.kind = kind
    }

    /// The range as Linux prints it (`[mem 0x...-0x...] usable`).
    public var description: String {
        "[mem 0x\(String(start, radix: 16))-0x\(String(start + length - 1, radix: 16))] \(kind == .ram ? "usable" : "reserved")"
    }
}

/// The guest's memory map for the zero page: each RAM range of guest memory, less the legacy
/// window from the EBDA at 0x9FC00 to 1 MiB (VGA memory and BIOS ROM on a PC, which Linux
/// does not use as RAM). Holes and device memory are absent, as on hardware.
public enum E820Map {
    /// Slots in the zero page's e820_table.
    public static let maximumEntries = 128
    static let legacyWindow: Range<UInt64> = 0x9_FC00..<0x10_0000

    /// The map of `memory`: each RAM range as usable, less the legacy window, sorted; more
    /// than ``maximumEntries`` ranges are refused.
    public static func entries(for memory: some GuestMemory) throws(LinuxBootError) -> [E820Entry] {
        var entries: [E820Entry] = []
        for range in memory.ramRanges.sorted(by: { $0.start.rawValue < $1.start.rawValue }) where range.length > 0 {
            let start = range.start.rawValue
            let end = start + range.length
            // The part below the window, and the part above it.
            if start < legacyWindow.lowerBound {
                entries.append(E820Entry(start: start, length: min(end, legacyWindow.lowerBound) - start, kind: .ram))
            }
            if end > legacyWindow.upperBound {
                let from = max(start, legacyWindow.upperBound)
                entries.append(E820Entry(start: from, length: end - from, kind: .ram))
            }
        }
        guard entries.count <= maximumEntries else { throw .tooManyMemoryRanges(entries.count) }
        return entries
    }
}
