import HVCore
import HVDevices

extension Machine {
    /// Adds the virtio-vsock device (one per machine): the guest is `guestCID`, and host
    /// programs reach it through the Unix socket at `socketPath` with the hybrid protocol of
    /// Firecracker and Cloud Hypervisor (`CONNECT <port>\n`, answered `OK <host port>\n`), while
    /// guest connections to host port P reach `<socketPath>_<P>`. Without a path, only the
    /// device's in-process `VsockDevice/connect(toGuestPort:timeout:)` and
    /// `VsockDevice/listen(port:accept:)` reach the guest. The socket file is removed when
    /// the machine stops.
    /// - Parameters:
    ///   - guestCID: the guest's context ID (3 or more).
    ///   - socketPath: the Unix socket for host programs; nil for in-process use only.
    ///   - limits: per-connection buffer, connection limit and timeouts.
    ///   - name: how errors and reports name it; default "vsock".
    @discardableResult
    public func addVsock(guestCID: UInt64, socketPath: String? = nil, limits: VsockLimits = VsockLimits(),
                         name: String? = nil) throws(MachineError) -> VsockDevice {
        let label = name ?? "vsock"
        guard state.withLock({ $0.vsock }) == nil else {
            throw MachineError(.addDevice, device: label, reason: "the machine has a vsock device already (a guest has one CID)")
        }
        let device = try during(.addDevice, device: label) {
            try VsockDevice(guestCID: guestCID, socketPath: socketPath, eventLoop: events, limits: limits,
                            logger: logger)
        }
        do {
            try add(virtio: device, name: label)
        } catch {
            device.close()
            throw error
        }
        state.withLock { $0.vsock = device }
        return device
    }
}
