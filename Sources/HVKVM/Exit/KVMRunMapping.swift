import CKVM
import Glibc
import SystemPackage

/// The vCPU's shared kvm_run page(s), mapped from the vCPU descriptor. A class so that the
/// vCPU and its kicker (used from other threads) share one mapping that lives as long as
/// either of them.
final class KVMRunMapping: Sendable {
    // SAFETY: set once in init; the mapping stays valid until deinit.
    nonisolated(unsafe) let pointer: UnsafeMutablePointer<kvm_run>
    let size: Int

    init(vcpuFileDescriptor: FileDescriptor, size: Int) throws(KVMError) {
        guard size >= MemoryLayout<kvm_run>.size else {
            throw .invalidArgument("KVM_GET_VCPU_MMAP_SIZE returned \(size), smaller than struct kvm_run")
        }
        let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpuFileDescriptor.rawValue, 0)
        guard let mapped, mapped != MAP_FAILED else { throw .systemCall("mmap(kvm_run)", Errno(rawValue: errno)) }
        pointer = mapped.bindMemory(to: kvm_run.self, capacity: 1)
        self.size = size
    }

    deinit {
        // SAFETY: exactly the mapping made in init; no VCPU or kicker refers to it any more.
        munmap(UnsafeMutableRawPointer(pointer), size)
    }

    var raw: UnsafeMutableRawPointer { UnsafeMutableRawPointer(pointer) }
}
