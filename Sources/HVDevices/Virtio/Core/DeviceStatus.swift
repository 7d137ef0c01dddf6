/// The virtio device status register: the driver's progress through initialisation, plus the
/// device's own NEEDS_RESET and the driver's FAILED.
public struct DeviceStatus: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The status bits.
    public let rawValue: UInt8
    /// A status from its bits.
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// ACKNOWLEDGE: the driver found the device.
    public static let acknowledge = DeviceStatus(rawValue: 1)
    /// DRIVER: the driver knows how to drive it.
    public static let driver = DeviceStatus(rawValue: 2)
    /// DRIVER_OK: the driver is ready; the device may use its queues.
    public static let driverOK = DeviceStatus(rawValue: 4)
    /// FEATURES_OK: the driver accepted features the device agreed to.
    public static let featuresOK = DeviceStatus(rawValue: 8)
    /// Set by the device when it hit an error it cannot recover from without a reset.
    public static let needsReset = DeviceStatus(rawValue: 64)
    /// Set by the driver when it gave up on the device.
    public static let failed = DeviceStatus(rawValue: 128)

    /// Whether the driver may move the status from `self` to `new` (virtio 1.2, 3.1.1).
    ///
    /// The driver only ever adds bits, in order: ACKNOWLEDGE, then DRIVER, then FEATURES_OK,
    /// then DRIVER_OK; FAILED may be added at any time. Clearing bits, skipping a step, or
    /// writing NEEDS_RESET (the device's bit) is illegal. Writing 0 is a reset and is handled
    /// before this check.
    public func allowsDriverTransition(to new: DeviceStatus) -> Bool {
        let driverBits: DeviceStatus = [.acknowledge, .driver, .featuresOK, .driverOK, .failed]
        let current = intersection(driverBits)
        guard new.subtracting(driverBits).subtracting(.needsReset).isEmpty,
              new.isSuperset(of: current) else { return false }
        let added = new.intersection(driverBits).subtracting(current)
        let steps: [(DeviceStatus, DeviceStatus)] = [
            (.driver, .acknowledge), (.featuresOK, .driver), (.driverOK, .featuresOK),
        ]
        for (step, prerequisite) in steps where added.contains(step) {
            guard new.contains(prerequisite) else { return false }
        }
        return true
    }

    /// The set bits by name.
    public var description: String {
        let names: [(DeviceStatus, String)] = [
            (.acknowledge, "ACKNOWLEDGE"), (.driver, "DRIVER"), (.featuresOK, "FEATURES_OK"),
            (.driverOK, "DRIVER_OK"), (.needsReset, "DEVICE_NEEDS_RESET"), (.failed, "FAILED"),
        ]
        let set = names.filter { contains($0.0) }.map(\.1)
        return set.isEmpty ? "0" : set.joined(separator: "|")
    }
}
