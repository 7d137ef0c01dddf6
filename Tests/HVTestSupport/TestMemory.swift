import HVCore

/// Guest RAM for device and hypercall tests: [0, 1 MiB) and [2 MiB, 3 MiB) with a hole
/// between them, and a read-only region at [4 MiB, 4 MiB + 64 KiB).
public func testMemory() throws -> GuestMemoryMmap {
    try GuestMemoryMmap([
        MemoryRegionSpec(start: GuestAddress(0), size: 1 << 20),
        MemoryRegionSpec(start: GuestAddress(2 << 20), size: 1 << 20),
        MemoryRegionSpec(start: GuestAddress(4 << 20), size: 64 << 10, options: [.readOnly]),
    ])
}

/// The guest address of the hole in ``testMemory()``, where the first region ends.
public let holeAddress = GuestAddress(1 << 20)
/// An address in the read-only region of ``testMemory()``.
public let readOnlyAddress = GuestAddress(4 << 20)
