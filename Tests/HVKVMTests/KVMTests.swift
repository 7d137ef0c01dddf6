import HVKVM
import SystemPackage
import Testing

@Suite("KVM system handle")
struct KVMTests {
    @Test("a missing device is reported with the path and the cause")
    func missingDevice() {
        #expect(throws: KVMError.deviceUnavailable(path: "/nonexistent/kvm", errno: .noSuchFileOrDirectory)) {
            try KVM(path: "/nonexistent/kvm")
        }
        let message = KVMError.deviceUnavailable(path: "/dev/kvm", errno: .permissionDenied).description
        #expect(message.contains("/dev/kvm") && message.contains("kvm group"))
    }

    @Test("a file that is not KVM is refused", .enabled(if: FileManagerFree.exists("/dev/null")))
    func notKVM() {
        #expect(throws: KVMError.self) { try KVM(path: "/dev/null") }
    }

    @Test(.requiresKVM) func capabilitiesAndLists() throws {
        let kvm = try KVM()
        #expect(kvm.vcpuMmapSize >= 4096)
        #expect(kvm.has(.userMemory))
        #expect(kvm.has(.irqchip))
        #expect(kvm.checkExtension(.maxVCPUs) >= 1)
        #expect(kvm.checkExtension(Capability(rawValue: 999_999)) == 0)
        #expect(throws: KVMError.missingCapability("capability 999999")) { try kvm.require(Capability(rawValue: 999_999)) }
        let cpuid = try kvm.supportedCPUID()
        #expect(cpuid.contains { $0.function == 0 })
        #expect(cpuid.contains { $0.function == 0x8000_0001 })
        let msrs = try kvm.msrIndexList()
        #expect(msrs.contains(0x174), "IA32_SYSENTER_CS is saved for every x86 guest")
    }
}

/// Just enough of a file check without Foundation.
enum FileManagerFree {
    static func exists(_ path: String) -> Bool {
        (try? FileDescriptor.open(path, .readOnly)).map { try? $0.close(); return true } ?? false
    }
}
