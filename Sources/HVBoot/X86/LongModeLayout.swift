import HVCore

/// Where the long-mode helpers put their tables in guest memory. The defaults sit in the
/// first 64 KiB, below where test guests and loaders usually place code (0x10000 and up).
public struct LongModeLayout: Sendable, Hashable {
    /// The GDT (and the TSS right after it); needs 0x200 bytes.
    public var gdtAddress: GuestAddress
    /// The page tables: PML4, PDPT, then one page directory per GiB mapped.
    public var pageTableAddress: GuestAddress
    /// How much of the address space the identity map covers, in bytes: a multiple of 1 GiB,
    /// at most 512 GiB. Mapped with 2 MiB pages.
    public var identityMapSize: UInt64

    /// A layout with the GDT at `gdtAddress`, the page tables at `pageTableAddress`, and an identity map of `identityMapSize` bytes.
    public init(gdtAddress: GuestAddress = GuestAddress(0x500),
                pageTableAddress: GuestAddress = GuestAddress(0x1000),
                identityMapSize: UInt64 = 4 << 30) {
        self.gdtAddress = gdtAddress
        self.pageTableAddress = pageTableAddress
        self.identityMapSize = identityMapSize
    }

    /// Bytes the page tables take: 2 pages plus one per GiB.
    public var pageTableBytes: UInt64 { (2 + identityMapSize / (1 << 30)) * 4096 }
}
