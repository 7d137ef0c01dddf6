import CKVM
import Glibc
import Synchronization
import SystemPackage

/// The vCPU's shared kvm_run page(s), mapped from the vCPU descriptor. A class so that the
/// vCPU and its kicker (used from other threads) share one mapping that lives as long as
/// either of them.
@safe final class KVMRunMapping: Sendable {
    // SAFETY: set once in init; the mapping stays valid until deinit.
    nonisolated(unsafe) let pointer: UnsafeMutablePointer<kvm_run>
    let size: Int
    /// Counts entries into the guest (and the vCPU's end), so that an ``ExitData`` can tell
    /// whether KVM has rewritten the page since its exit. Written and read by the vCPU's
    /// thread; atomic only because the mapping is shared with the kicker.
    private let runs = Atomic<UInt64>(0)

    init(vcpuFileDescriptor: FileDescriptor, size: Int) throws(KVMError) {
        guard size >= MemoryLayout<kvm_run>.size else {
            throw .invalidArgument("KVM_GET_VCPU_MMAP_SIZE returned \(size), smaller than struct kvm_run")
        }
        let mapped = unsafe mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpuFileDescriptor.rawValue, 0)
        guard let mapped = unsafe mapped, unsafe mapped != MAP_FAILED else { throw .systemCall("mmap(kvm_run)", Errno(rawValue: errno)) }
        unsafe pointer = unsafe mapped.bindMemory(to: kvm_run.self, capacity: 1)
        self.size = size
    }

    deinit {
        // SAFETY: exactly the mapping made in init; no VCPU or kicker refers to it any more.
        unsafe munmap(UnsafeMutableRawPointer(pointer), size)
    }

    var raw: UnsafeMutableRawPointer { unsafe UnsafeMutableRawPointer(pointer) }

    /// The number of the current (or last) run.
    var currentRun: UInt64 { runs.load(ordering: .relaxed) }

    /// Marks the exit data of the previous run stale: called before each entry into the guest
    /// and when the vCPU goes away.
    func beginRun() { runs.wrappingAdd(1, ordering: .relaxed) }
}
