import HVCore
import Testing
@testable import HVKVM

@Suite(.requiresKVM) struct GuestCPUModelTests {
    @Test("the filter sets the hypervisor bit and signature, and gives each vCPU its APIC ID")
    func filter() throws {
        let kvm = try KVM()
        var model = try GuestCPUModel(kvm: kvm, vcpuCount: 4)
        #expect(model.has(.hypervisor))
        let signature = try #require(model.entries.first { $0.function == 0x4000_0000 })
        #expect([signature.ebx, signature.ecx, signature.edx] == [0x4B4D_564B, 0x564B_4D56, 0x0000_004D])
        for id in UInt32(0)..<4 {
            let leaf1 = try #require(model.entries(forVCPU: id).first { $0.function == 1 })
            #expect(leaf1.ebx >> 24 == id)
            #expect((leaf1.ebx >> 16) & 0xFF == 4)
            #expect(leaf1.edx & (1 << 28) != 0)
        }
        model.removeFeature(.cx16)
        #expect(!model.has(.cx16))
        let leaf1 = try #require(model.entries(forVCPU: 2).first { $0.function == 1 })
        #expect(leaf1.ecx & (1 << 13) == 0)
        #expect(throws: KVMError.self) { try GuestCPUModel(kvm: kvm, vcpuCount: 0) }
        #expect(throws: KVMError.self) { try GuestCPUModel(kvm: kvm, vcpuCount: 256) }
    }

    @Test("a guest reads the filtered CPUID: its own APIC ID and the hypervisor bit")
    func guestSeesIt() async throws {
        // cpuid leaf 1, then EBX and ECX out on ports 0x10 and 0x14.
        let code: [UInt8] = [0xB8, 0x01, 0x00, 0x00, 0x00,  // mov eax, 1
                             0x0F, 0xA2,                     // cpuid
                             0x89, 0xD8, 0xE7, 0x10,         // mov eax, ebx; out 0x10, eax
                             0x89, 0xC8, 0xE7, 0x14,         // mov eax, ecx; out 0x14, eax
                             0xF4]                           // hlt
        let vm = try TestVM(code: code)
        let model = try GuestCPUModel(kvm: vm.kvm, vcpuCount: 2)
        let device = EchoDevice()
        try vm.pio.register(device, at: GuestAddress(0x10), length: 8)
        let memory = vm.memory
        let (reason, timedOut) = try await vm.run { vcpu throws(KVMError) in
            try vcpu.setCPUID(model.entries(forVCPU: 1))
            try vcpu.setupLongMode(memory: memory, entry: TestVM.entry, stackPointer: TestVM.stackTop)
        }
        #expect(!timedOut)
        #expect(reason == .halted(vcpu: 0))
        let writes = device.writes
        #expect(writes.count == 2)
        #expect(writes.first.map { $0.value >> 24 } == 1, "APIC ID: \(writes)")
        #expect(writes.last.map { $0.value & (1 << 31) != 0 } == true, "hypervisor bit: \(writes)")
    }
}
