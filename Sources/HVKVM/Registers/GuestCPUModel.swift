/// The CPU a guest sees through CPUID: KVM's supported list, filtered as documented here, and
/// changed by the embedding program where it wants.
///
/// The filter:
/// - leaf 0x1: the hypervisor bit (ECX 31) is set; EBX gives each vCPU its own initial APIC ID
///   (bits 31-24, the vCPU id) and the logical processor count (bits 23-16), with HTT (EDX
///   28) set when there is more than one.
/// - leaf 0xB (x2APIC topology): EDX is the vCPU's x2APIC ID at every sub-leaf; one thread per
///   core, all cores in one package.
/// - leaf 0x40000000: the KVM signature ("KVMKVMKVM"), so the guest finds the paravirtual
///   features of leaf 0x40000001 (kvmclock among them) as KVM reports them.
/// - ``removeFeature(_:)`` takes features away (``Feature/cx16`` for this host, whose
///   software hypervisor does not emulate cmpxchg16b).
public struct GuestCPUModel: Sendable, Hashable {
    /// A feature bit in one register of one leaf.
    public struct Feature: Sendable, Hashable {
        /// The output register that holds the bit.
        public enum Register: Sendable, Hashable { case eax, ebx, ecx, edx }
        /// The CPUID leaf.
        public let leaf: UInt32
        /// The subleaf.
        public let subleaf: UInt32
        /// The output register.
        public let register: Register
        /// The bit number in that register.
        public let bit: Int

        /// The feature at `bit` of `register` in leaf `leaf`, subleaf `subleaf`.
        public init(leaf: UInt32, subleaf: UInt32 = 0, register: Register, bit: Int) {
            self.leaf = leaf
            self.subleaf = subleaf
            self.register = register
            self.bit = bit
        }

        /// CMPXCHG16B (leaf 1, ECX 13).
        public static let cx16 = Feature(leaf: 1, register: .ecx, bit: 13)
        /// The hypervisor-present bit (leaf 1, ECX 31).
        public static let hypervisor = Feature(leaf: 1, register: .ecx, bit: 31)
        /// x2APIC (leaf 1, ECX 21).
        public static let x2apic = Feature(leaf: 1, register: .ecx, bit: 21)
    }

    /// The entries every vCPU shares, before the per-vCPU fields are filled in.
    public private(set) var entries: [CPUIDEntry]
    /// The vCPUs the model describes (topology leaves).
    public let vcpuCount: Int

    /// KVM's supported CPUID with the filter above, for `vcpuCount` vCPUs.
    public init(kvm: KVM, vcpuCount: Int) throws(KVMError) {
        try self.init(supported: kvm.supportedCPUID(), vcpuCount: vcpuCount)
    }

    /// A model from `supported` (KVM_GET_SUPPORTED_CPUID's leaves) for `vcpuCount` vCPUs.
    public init(supported: [CPUIDEntry], vcpuCount: Int) throws(KVMError) {
        guard (1...255).contains(vcpuCount) else { throw .invalidArgument("vCPU count \(vcpuCount) (1 to 255 with xAPIC IDs)") }
        self.vcpuCount = vcpuCount
        entries = supported
        set(.hypervisor, true)
        if !entries.contains(where: { $0.function == 0x4000_0000 }) {
            // "KVMKVMKVM\0\0\0" in EBX, ECX, EDX; the highest hypervisor leaf in EAX.
            entries.append(CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4B4D_564B, ecx: 0x564B_4D56, edx: 0x0000_004D))
        }
    }

    /// Takes a feature away from every vCPU.
    public mutating func removeFeature(_ feature: Feature) { set(feature, false) }

    /// Gives a feature to every vCPU (only meaningful if KVM can provide it).
    public mutating func addFeature(_ feature: Feature) { set(feature, true) }

    /// Whether the model shows `feature` to the guest.
    public func has(_ feature: Feature) -> Bool {
        guard let entry = entries.first(where: { $0.function == feature.leaf && $0.index == feature.subleaf }) else { return false }
        return Self.register(entry, feature.register) & (1 << UInt32(feature.bit)) != 0
    }

    /// The entries vCPU `id` gets: its APIC IDs and the topology filled in.
    public func entries(forVCPU id: UInt32) -> [CPUIDEntry] {
        entries.map { entry in
            var entry = entry
            switch entry.function {
            case 1:
                entry.ebx = (entry.ebx & 0x0000_FFFF) | (id & 0xFF) << 24 | UInt32(vcpuCount & 0xFF) << 16
                if vcpuCount > 1 { entry.edx |= 1 << 28 } else { entry.edx &= ~(1 << 28) }
            case 0xB:
                entry.edx = id
            default:
                break
            }
            return entry
        }
    }

    private mutating func set(_ feature: Feature, _ on: Bool) {
        guard let index = entries.firstIndex(where: { $0.function == feature.leaf && $0.index == feature.subleaf }) else { return }
        let mask: UInt32 = 1 << UInt32(feature.bit)
        switch feature.register {
        case .eax: entries[index].eax = on ? entries[index].eax | mask : entries[index].eax & ~mask
        case .ebx: entries[index].ebx = on ? entries[index].ebx | mask : entries[index].ebx & ~mask
        case .ecx: entries[index].ecx = on ? entries[index].ecx | mask : entries[index].ecx & ~mask
        case .edx: entries[index].edx = on ? entries[index].edx | mask : entries[index].edx & ~mask
        }
    }

    private static func register(_ entry: CPUIDEntry, _ register: Feature.Register) -> UInt32 {
        switch register {
        case .eax: return entry.eax
        case .ebx: return entry.ebx
        case .ecx: return entry.ecx
        case .edx: return entry.edx
        }
    }
}
