import HVCore

/// HVDevices: virtio device backends over the virtio-mmio transport and the legacy platform
/// devices a guest needs. Depends on HVCore (buses, guest memory, interrupt lines) and on
/// libaio for the block backend, never on HVKVM. Its first device models arrive with the
/// devices issue; the module exists now so the package's shape and import rules are fixed.
public enum HVDevices {}
