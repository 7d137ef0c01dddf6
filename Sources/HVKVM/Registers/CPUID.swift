import CKVM
import SystemPackage

/// One CPUID leaf as KVM describes it (struct kvm_cpuid_entry2).
public struct CPUIDEntry: Hashable, Sendable {
    /// The leaf (EAX on input).
    public var function: UInt32
    /// The subleaf (ECX on input), where the leaf has them.
    public var index: UInt32
    /// KVM_CPUID_FLAG_* bits (for example, whether `index` is significant).
    public var flags: UInt32
    /// EAX on output.
    public var eax: UInt32
    /// EBX on output.
    public var ebx: UInt32
    /// ECX on output.
    public var ecx: UInt32
    /// EDX on output.
    public var edx: UInt32

    /// A leaf with these outputs.
    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0, eax: UInt32, ebx: UInt32, ecx: UInt32, edx: UInt32) {
        self.function = function
        self.index = index
        self.flags = flags
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }

    init(_ raw: kvm_cpuid_entry2) {
        self.init(function: raw.function, index: raw.index, flags: raw.flags,
                  eax: raw.eax, ebx: raw.ebx, ecx: raw.ecx, edx: raw.edx)
    }

    var raw: kvm_cpuid_entry2 {
        var entry = kvm_cpuid_entry2()
        entry.function = function
        entry.index = index
        entry.flags = flags
        entry.eax = eax
        entry.ebx = ebx
        entry.ecx = ecx
        entry.edx = edx
        return entry
    }

    /// The most entries HVKit will ask KVM for (KVM itself caps the list at 256).
    static let maximumCount = 256

    /// Runs an ioctl that fills a struct kvm_cpuid2 and returns its entries.
    static func query(_ fd: FileDescriptor, _ request: UInt, _ name: StaticString) throws(KVMError) -> [CPUIDEntry] {
        unsafe try withCPUIDBuffer(count: maximumCount) { (list) throws(KVMError) in
            unsafe list.pointee.nent = UInt32(maximumCount)
            unsafe try kvmIoctl(fd, request, UnsafeMutableRawPointer(list), name)
            let count = unsafe min(Int(list.pointee.nent), maximumCount)
            return (0..<count).map { unsafe CPUIDEntry(entries(of: list)[$0]) }
        }
    }

    /// Passes `entries` to an ioctl that takes a struct kvm_cpuid2.
    static func submit(_ entries: [CPUIDEntry], _ fd: FileDescriptor, _ request: UInt, _ name: StaticString) throws(KVMError) {
        guard entries.count <= maximumCount else {
            throw .invalidArgument("\(entries.count) CPUID entries (at most \(maximumCount))")
        }
        unsafe try withCPUIDBuffer(count: entries.count) { (list) throws(KVMError) in
            unsafe list.pointee.nent = UInt32(entries.count)
            let slots = unsafe CPUIDEntry.entries(of: list)
            for (index, entry) in entries.enumerated() { unsafe slots[index] = entry.raw }
            unsafe try kvmIoctl(fd, request, UnsafeMutableRawPointer(list), name)
        }
    }

    private static func entries(of list: UnsafeMutablePointer<kvm_cpuid2>) -> UnsafeMutablePointer<kvm_cpuid_entry2> {
        // SAFETY: the entries follow the header in the same allocation (flexible array member).
        unsafe (UnsafeMutableRawPointer(list) + MemoryLayout<kvm_cpuid2>.size).assumingMemoryBound(to: kvm_cpuid_entry2.self)
    }

    private static func withCPUIDBuffer<R>(
        count: Int, _ body: (UnsafeMutablePointer<kvm_cpuid2>) throws(KVMError) -> R
    ) throws(KVMError) -> R {
        let bytes = MemoryLayout<kvm_cpuid2>.size + max(count, 1) * MemoryLayout<kvm_cpuid_entry2>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
        defer { unsafe raw.deallocate() }
        unsafe raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        return unsafe try body(raw.bindMemory(to: kvm_cpuid2.self, capacity: 1))
    }
}
