/// HVDevicesTesting: the driver side of virtio, for testing and benchmarking device models
/// without a guest.
///
/// ``DriverQueue`` lays out a split virtqueue in guest memory and adds chains the way a guest
/// driver does (and, for hostile tests, the ways it must not); ``MMIODriver`` walks a
/// virtio-mmio transport through initialisation. HVKit's own device tests and hv-bench use them;
/// so can tests of devices written outside HVKit.
public enum HVDevicesTesting {}
