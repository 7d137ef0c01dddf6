import HVCore

/// Guest RAM for device tests: [0, 1 MiB) and [2 MiB, 3 MiB) with a hole between them, and a
/// read-only region at [4 MiB, 4 MiB + 64 KiB).
func testMemory() throws -> GuestMemoryMmap {
    try GuestMemoryMmap([
        MemoryRegionSpec(start: GuestAddress(0), size: 1 << 20),
        MemoryRegionSpec(start: GuestAddress(2 << 20), size: 1 << 20),
        MemoryRegionSpec(start: GuestAddress(4 << 20), size: 64 << 10, options: [.readOnly]),
    ])
}

/// The guest address of the hole in ``testMemory()``.
let holeAddress = GuestAddress(1 << 20)
/// An address in the read-only region of ``testMemory()``.
let readOnlyAddress = GuestAddress(4 << 20)

