import CKVM

/// Which CPU features a saved vCPU used that a host lacks: a guest restored without one would
/// fault (or compute wrongly) on the first instruction that needs it, so a restore is refused
/// by name instead.
public enum CPUFeatureCheck {
    /// A feature register: the CPUID leaf and subleaf, which output, and the bits that follow
    /// the guest's own control registers (OSXSAVE, OSPKE) or APIC state and so are not host
    /// features.
    struct Register: Sendable {
        let leaf: UInt32, subleaf: UInt32
        let output: GuestCPUModel.Feature.Register
        let ignored: UInt32

        func value(_ entry: CPUIDEntry) -> UInt32 {
            switch output {
            case .eax: return entry.eax
            case .ebx: return entry.ebx
            case .ecx: return entry.ecx
            case .edx: return entry.edx
            }
        }

        var name: String {
            switch output {
            case .eax: return "EAX"
            case .ebx: return "EBX"
            case .ecx: return "ECX"
            case .edx: return "EDX"
            }
        }
    }

    static let registers: [Register] = [
        Register(leaf: 1, subleaf: 0, output: .ecx, ignored: 1 << 27),
        Register(leaf: 1, subleaf: 0, output: .edx, ignored: 1 << 9),
        Register(leaf: 7, subleaf: 0, output: .ebx, ignored: 0),
        Register(leaf: 7, subleaf: 0, output: .ecx, ignored: 1 << 4),
        Register(leaf: 7, subleaf: 0, output: .edx, ignored: 0),
        Register(leaf: 0xD, subleaf: 1, output: .eax, ignored: 0),
        Register(leaf: 0x8000_0001, subleaf: 0, output: .ecx, ignored: 0),
        Register(leaf: 0x8000_0001, subleaf: 0, output: .edx, ignored: 0),
    ]

    /// Names of well-known feature bits, for the refusal's message.
    static let names: [String: String] = [
        "1.ECX.0": "sse3", "1.ECX.1": "pclmulqdq", "1.ECX.9": "ssse3", "1.ECX.12": "fma", "1.ECX.13": "cx16",
        "1.ECX.19": "sse4.1", "1.ECX.20": "sse4.2", "1.ECX.21": "x2apic", "1.ECX.22": "movbe", "1.ECX.23": "popcnt",
        "1.ECX.25": "aes", "1.ECX.26": "xsave", "1.ECX.28": "avx", "1.ECX.29": "f16c", "1.ECX.30": "rdrand",
        "1.EDX.25": "sse", "1.EDX.26": "sse2", "7.EBX.3": "bmi1", "7.EBX.5": "avx2", "7.EBX.8": "bmi2",
        "7.EBX.9": "erms", "7.EBX.16": "avx512f", "7.EBX.18": "rdseed", "7.EBX.19": "adx", "7.EBX.29": "sha",
        "0xd.EAX.0": "xsaveopt", "0xd.EAX.1": "xsavec", "0xd.EAX.3": "xsaves",
        "0x80000001.ECX.5": "lzcnt", "0x80000001.EDX.20": "nx", "0x80000001.EDX.27": "rdtscp", "0x80000001.EDX.29": "lm",
    ]

    /// The host processor's own CPUID for the leaves compared (read with the `cpuid`
    /// instruction): what a guest's instructions can use when they run natively.
    public static func hostCPUID() -> [CPUIDEntry] {
        var leaves: [CPUIDEntry] = []
        for register in registers where !leaves.contains(where: { $0.function == register.leaf && $0.index == register.subleaf }) {
            var out: [UInt32] = [0, 0, 0, 0]
            unsafe ckvm_host_cpuid(register.leaf, register.subleaf, &out)
            leaves.append(CPUIDEntry(function: register.leaf, index: register.subleaf, eax: out[0], ebx: out[1], ecx: out[2], edx: out[3]))
        }
        return leaves
    }

    /// The features `saved` (a vCPU's CPUID from a snapshot) has that neither this host's
    /// processor (``hostCPUID()``) nor its KVM (`KVM.supportedCPUID()`, which adds what KVM
    /// emulates, such as x2APIC) provides, as "avx2 (CPUID.7:EBX[5])". Empty when the host has
    /// everything.
    public static func missingFeatures(saved: [CPUIDEntry], supported: [CPUIDEntry], host: [CPUIDEntry] = hostCPUID()) -> [String] {
        var missing: [String] = []
        for register in registers {
            guard let wanted = saved.first(where: { $0.function == register.leaf && $0.index == register.subleaf }) else { continue }
            let emulated = supported.first { $0.function == register.leaf && $0.index == register.subleaf }.map(register.value) ?? 0
            let native = host.first { $0.function == register.leaf && $0.index == register.subleaf }.map(register.value) ?? 0
            let lacking = register.value(wanted) & ~(emulated | native) & ~register.ignored
            guard lacking != 0 else { continue }
            let leafName = register.leaf < 0xA ? String(register.leaf) : "0x" + String(register.leaf, radix: 16)
            for bit in 0..<32 where lacking & (1 << bit) != 0 {
                let place = "\(leafName).\(register.name).\(bit)"
                let location = "CPUID.\(leafName)\(register.subleaf != 0 ? ".\(register.subleaf)" : ""):\(register.name)[\(bit)]"
                missing.append(names[place].map { "\($0) (\(location))" } ?? location)
            }
        }
        return missing
    }
}
