/// A KVM_EXIT_INTERNAL_ERROR decoded: the suberror's meaning and, for an emulation failure
/// that carries them, the bytes of the instruction KVM could not emulate.
public struct InternalErrorReport: Sendable, Hashable, CustomStringConvertible {
    /// KVM_INTERNAL_ERROR_*: 1 emulation, 2 simultaneous exceptions, 3 delivery event, 4 an
    /// unexpected exit reason.
    public let suberror: UInt32
    /// The raw data words of kvm_run's internal error.
    public let data: [UInt64]

    /// Decodes `suberror` and its `data` words.
    public init(suberror: UInt32, data: [UInt64]) {
        self.suberror = suberror
        self.data = data
    }

    /// The instruction bytes of an emulation failure (suberror 1 with the
    /// KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES flag), or nil. kvm_run lays them
    /// out as flags (word 0), then a size byte and up to 15 bytes (words 1 and 2).
    public var instructionBytes: [UInt8]? {
        guard suberror == 1, data.count >= 3, data[0] & 1 != 0 else { return nil }
        let packed = [data[1], data[2]].flatMap { word in (0..<8).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) } }
        let size = Int(packed[0])
        guard (1...15).contains(size) else { return nil }
        return Array(packed[1...size])
    }

    /// The error in words, with the instruction bytes when KVM gave them.
    public var description: String {
        switch suberror {
        case 1:
            guard let bytes = instructionBytes else { return "KVM could not emulate an instruction (no bytes reported)" }
            let hex = bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: " ")
            return "KVM could not emulate the instruction \(hex)"
        case 2: return "KVM internal error: an exception while delivering an exception"
        case 3: return "KVM internal error: an event could not be delivered"
        case 4: return "KVM internal error: an unexpected exit reason, data \(data.map { "0x" + String($0, radix: 16) })"
        default: return "KVM internal error, suberror \(suberror), data \(data.map { "0x" + String($0, radix: 16) })"
        }
    }
}
