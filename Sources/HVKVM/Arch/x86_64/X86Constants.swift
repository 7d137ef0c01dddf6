/// x86 architectural bits the setup helpers use, named after the manuals.
public enum X86 {
    /// CR0.PE: protected mode.
    public static let cr0ProtectionEnable: UInt64 = 1 << 0
    /// CR0.MP.
    public static let cr0MonitorCoprocessor: UInt64 = 1 << 1
    /// CR0.ET.
    public static let cr0ExtensionType: UInt64 = 1 << 4
    /// CR0.NE: native x87 error reporting.
    public static let cr0NumericError: UInt64 = 1 << 5
    /// CR0.WP: supervisor writes honour read-only pages.
    public static let cr0WriteProtect: UInt64 = 1 << 16
    /// CR0.PG: paging.
    public static let cr0Paging: UInt64 = 1 << 31

    /// CR4.PAE, which long mode needs.
    public static let cr4PhysicalAddressExtension: UInt64 = 1 << 5
    /// The OS saves SSE state with FXSAVE: needed before compiled code may use SSE.
    public static let cr4OSFXSR: UInt64 = 1 << 9
    /// The OS handles SIMD floating-point exceptions.
    public static let cr4OSXMMEXCPT: UInt64 = 1 << 10

    /// EFER.LME: long mode enabled.
    public static let eferLongModeEnable: UInt64 = 1 << 8
    /// EFER.LMA: long mode active.
    public static let eferLongModeActive: UInt64 = 1 << 10

    /// Page-table entry bits.
    public static let pagePresent: UInt64 = 1 << 0
    /// Writable.
    public static let pageWritable: UInt64 = 1 << 1
    /// A large page (2 MiB in a page directory).
    public static let pageSize: UInt64 = 1 << 7
    /// Accessed.
    public static let pageAccessed: UInt64 = 1 << 5
    /// Dirty.
    public static let pageDirty: UInt64 = 1 << 6

    /// Segment descriptor types (with the accessed bit set, as loaded segments have it).
    public static let segmentCodeExecuteRead: UInt8 = 0xB
    /// Read/write data.
    public static let segmentDataReadWrite: UInt8 = 0x3
    /// A busy 64-bit TSS.
    public static let segmentBusyTSS64: UInt8 = 0xB
}
