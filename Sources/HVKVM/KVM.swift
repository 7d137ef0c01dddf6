import CKVM
import Glibc
import HVCore
import SystemPackage

/// The KVM system handle: an open /dev/kvm. Checks the API version, answers capability
/// queries, lists the CPUID entries and MSRs the host supports, and creates VMs.
public final class KVM: Sendable {
    /// Where KVM usually is.
    public static let defaultPath = "/dev/kvm"

    /// The /dev/kvm descriptor, closed when this object goes away.
    public let fileDescriptor: FileDescriptor
    /// The size of each vCPU's shared kvm_run mapping.
    public let vcpuMmapSize: Int
    /// KVM_GET_SUPPORTED_CPUID's answer, which does not change while /dev/kvm is open: asked
    /// once, under the lock, so that a second caller waits for the first one's answer.
    private let supportedCPUIDCache = Locked<[CPUIDEntry]?>(nil)

    /// Opens `path` and checks that it speaks KVM API version 12.
    public init(path: String = KVM.defaultPath) throws(KVMError) {
        let fd = unsafe open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw .deviceUnavailable(path: path, errno: Errno(rawValue: errno)) }
        let descriptor = FileDescriptor(rawValue: fd)
        do throws(KVMError) {
            let version = try kvmIoctl(descriptor, CKVM_GET_API_VERSION, value: 0, "KVM_GET_API_VERSION")
            guard version == KVM_API_VERSION else { throw .unsupportedAPIVersion(version) }
            vcpuMmapSize = Int(try kvmIoctl(descriptor, CKVM_GET_VCPU_MMAP_SIZE, value: 0, "KVM_GET_VCPU_MMAP_SIZE"))
        } catch {
            descriptor.closeQuietly()
            throw error
        }
        fileDescriptor = descriptor
    }

    deinit { fileDescriptor.closeQuietly() }

    /// Why KVM cannot be used here, or nil when /dev/kvm opens and speaks API 12. For test
    /// suites and examples that want to skip with a reason instead of failing.
    public static func unavailabilityReason(path: String = KVM.defaultPath) -> String? {
        do {
            _ = try KVM(path: path)
            return nil
        } catch {
            return error.description
        }
    }

    /// KVM_CHECK_EXTENSION: 0 when the capability is absent, otherwise a positive value whose
    /// meaning depends on the capability (often 1, sometimes a count or a bit set).
    public func checkExtension(_ capability: Capability) -> Int32 {
        (try? kvmIoctl(fileDescriptor, CKVM_CHECK_EXTENSION, value: UInt(capability.rawValue), "KVM_CHECK_EXTENSION")) ?? 0
    }

    /// Whether the host reports `capability`.
    public func has(_ capability: Capability) -> Bool { checkExtension(capability) > 0 }

    /// Throws ``KVMError/missingCapability(_:)`` unless the host reports `capability`.
    public func require(_ capability: Capability) throws(KVMError) {
        guard has(capability) else { throw .missingCapability(capability.description) }
    }

    /// The CPUID entries KVM can expose to a guest on this host (KVM_GET_SUPPORTED_CPUID),
    /// asked once per handle: the ioctl builds the whole table each time, about half a
    /// millisecond on an emulating host.
    public func supportedCPUID() throws(KVMError) -> [CPUIDEntry] {
        try supportedCPUIDCache.withLock { cached throws(KVMError) -> [CPUIDEntry] in
            if let cached { return cached }
            let entries = try CPUIDEntry.query(fileDescriptor, CKVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID")
            cached = entries
            return entries
        }
    }

    /// The MSR indices KVM saves and restores for a guest (KVM_GET_MSR_INDEX_LIST).
    public func msrIndexList() throws(KVMError) -> [UInt32] {
        try queryMSRList(CKVM_GET_MSR_INDEX_LIST, "KVM_GET_MSR_INDEX_LIST")
    }

    /// The feature MSRs (capabilities KVM reports through MSRs, such as VMX capabilities).
    public func msrFeatureIndexList() throws(KVMError) -> [UInt32] {
        try queryMSRList(CKVM_GET_MSR_FEATURE_INDEX_LIST, "KVM_GET_MSR_FEATURE_INDEX_LIST")
    }

    private func queryMSRList(_ request: UInt, _ name: StaticString) throws(KVMError) -> [UInt32] {
        // kvm_msr_list is a count followed by that many indices; grow until it fits.
        var capacity = 256
        while capacity <= 1 << 16 {
            let header = MemoryLayout<kvm_msr_list>.size
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: header + capacity * 4, alignment: 8)
            defer { unsafe buffer.deallocate() }
            let list = unsafe buffer.bindMemory(to: kvm_msr_list.self, capacity: 1)
            unsafe list.pointee.nmsrs = UInt32(capacity)
            do {
                unsafe try kvmIoctl(fileDescriptor, request, buffer, name)
            } catch .ioctl(_, .argListTooLong) {  // E2BIG: nmsrs now holds the needed count.
                capacity = unsafe max(capacity * 2, Int(list.pointee.nmsrs))
                continue
            }
            let count = unsafe min(Int(list.pointee.nmsrs), capacity)
            let indices = unsafe (buffer + header).bindMemory(to: UInt32.self, capacity: count)
            return unsafe Array(UnsafeBufferPointer(start: indices, count: count))
        }
        throw .invalidArgument("\(name) reports more than 65536 MSRs")
    }

    /// Creates a VM (KVM_CREATE_VM with the default machine type).
    public func createVM() throws(KVMError) -> VirtualMachine {
        let fd = try kvmIoctl(fileDescriptor, CKVM_CREATE_VM, value: 0, "KVM_CREATE_VM")
        return VirtualMachine(kvm: self, fileDescriptor: FileDescriptor(rawValue: fd))
    }
}
