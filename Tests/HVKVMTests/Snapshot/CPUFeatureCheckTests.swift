import HVKVM
import Testing

@Suite("CPU feature check for restores")
struct CPUFeatureCheckTests {
    static func leaf(_ function: UInt32, index: UInt32 = 0, eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) -> CPUIDEntry {
        CPUIDEntry(function: function, index: index, eax: eax, ebx: ebx, ecx: ecx, edx: edx)
    }

    @Test func aFeatureNeitherTheProcessorNorKVMHasIsNamed() {
        let saved = [Self.leaf(1, ecx: 1 << 28 | 1 << 21 | 1 << 27), Self.leaf(7, ebx: 1 << 5)]
        // The host processor has AVX; KVM emulates x2APIC; OSXSAVE follows the guest's CR4.
        let missing = CPUFeatureCheck.missingFeatures(saved: saved, supported: [Self.leaf(1, ecx: 1 << 21)],
                                                      host: [Self.leaf(1, ecx: 1 << 28)])
        #expect(missing == ["avx2 (CPUID.7:EBX[5])"])
    }

    @Test func aHostWithEverythingMissesNothing() {
        let saved = [Self.leaf(1, ecx: 0xFFFF_FFFF, edx: 0xFFFF_FFFF), Self.leaf(0xD, index: 1, eax: 0b1011)]
        let host = [Self.leaf(1, ecx: 0xFFFF_FFFF, edx: 0xFFFF_FFFF), Self.leaf(0xD, index: 1, eax: 0b1111)]
        #expect(CPUFeatureCheck.missingFeatures(saved: saved, supported: [], host: host).isEmpty)
        let unnamed = CPUFeatureCheck.missingFeatures(saved: [Self.leaf(0x8000_0001, edx: 1 << 3)], supported: [], host: [])
        #expect(unnamed == ["CPUID.0x80000001:EDX[3]"])
    }

    /// This host's own processor passes its own check: what a snapshot taken here needs.
    @Test func theHostsOwnCPUIDHasEveryFeatureItHas() {
        let host = CPUFeatureCheck.hostCPUID()
        #expect(host.contains { $0.function == 1 })
        #expect(CPUFeatureCheck.missingFeatures(saved: host, supported: []).isEmpty)
    }
}
