/// x86 architectural bits the setup helpers use, named after the manuals.
public enum X86 {
    public static let cr0ProtectionEnable: UInt64 = 1 << 0
    public static let cr0MonitorCoprocessor: UInt64 = 1 << 1
    public static let cr0ExtensionType: UInt64 = 1 << 4
    public static let cr0NumericError: UInt64 = 1 << 5
    public static let cr0WriteProtect: UInt64 = 1 << 16
    public static let cr0Paging: UInt64 = 1 << 31

    public static let cr4PhysicalAddressExtension: UInt64 = 1 << 5
    /// The OS saves SSE state with FXSAVE: needed before compiled code may use SSE.
    public static let cr4OSFXSR: UInt64 = 1 << 9
    /// The OS handles SIMD floating-point exceptions.
    public static let cr4OSXMMEXCPT: UInt64 = 1 << 10

    public static let eferLongModeEnable: UInt64 = 1 << 8
    public static let eferLongModeActive: UInt64 = 1 << 10

    /// Page-table entry bits.
    public static let pagePresent: UInt64 = 1 << 0
    public static let pageWritable: UInt64 = 1 << 1
    public static let pageSize: UInt64 = 1 << 7
    public static let pageAccessed: UInt64 = 1 << 5
    public static let pageDirty: UInt64 = 1 << 6

    /// Segment descriptor types (with the accessed bit set, as loaded segments have it).
    public static let segmentCodeExecuteRead: UInt8 = 0xB
    public static let segmentDataReadWrite: UInt8 = 0x3
    public static let segmentBusyTSS64: UInt8 = 0xB
}
