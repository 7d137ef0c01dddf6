/// The virtio-mmio version 2 register map (virtio 1.2, section 4.2.2). Offsets in bytes from
/// the device's base; every register is 32 bits wide.
public enum MMIORegister: UInt64, Sendable, CaseIterable {
    case magicValue = 0x000
    case version = 0x004
    case deviceID = 0x008
    case vendorID = 0x00c
    case deviceFeatures = 0x010
    case deviceFeaturesSelect = 0x014
    case driverFeatures = 0x020
    case driverFeaturesSelect = 0x024
    case queueSelect = 0x030
    case queueSizeMax = 0x034
    case queueSize = 0x038
    case queueReady = 0x044
    case queueNotify = 0x050
    case interruptStatus = 0x060
    case interruptAcknowledge = 0x064
    case status = 0x070
    case queueDescriptorLow = 0x080
    case queueDescriptorHigh = 0x084
    case queueDriverLow = 0x090
    case queueDriverHigh = 0x094
    case queueDeviceLow = 0x0a0
    case queueDeviceHigh = 0x0a4
    case sharedMemorySelect = 0x0ac
    case sharedMemoryLengthLow = 0x0b0
    case sharedMemoryLengthHigh = 0x0b4
    case sharedMemoryBaseLow = 0x0b8
    case sharedMemoryBaseHigh = 0x0bc
    case queueReset = 0x0c0
    case configGeneration = 0x0fc

    /// "virt" in little-endian.
    public static let magic: UInt32 = 0x7472_6976
    /// The transport version HVKit implements (the modern one).
    public static let transportVersion: UInt32 = 2
    /// Where the device-specific configuration space starts.
    public static let configurationOffset: UInt64 = 0x100
}
