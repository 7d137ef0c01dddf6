import HVCore

/// ``HypercallNumber/random``: fills a guest buffer (at most
/// ``HypercallABI/maximumSmallTransfer`` bytes) from the host's getrandom(2), straight into
/// guest RAM after checking the whole buffer is writable RAM.
public struct RandomService: ParavirtService {
    /// Random bytes from the host's getrandom.
    public init() {}

    /// Adds random.
    public func install(into table: inout HypercallTable) throws(HypercallTableError) {
        table.info.features.insert(.random)
        try table.register(.random, name: "random") { call throws(HypercallError) in
            let length = try call.length(1, maximum: HypercallABI.maximumSmallTransfer)
            let buffers = unsafe try call.hostBuffers(at: call.address(0), length: length, for: .write)
            do {
                // SAFETY: hostBuffers checked the range is writable guest RAM; the dispatcher's
                // memory keeps it mapped.
                for unsafe buffer in unsafe buffers { unsafe try HostRandom.fill(buffer) }
            } catch {
                throw HypercallError(.io, "getrandom failed: \(error)")
            }
            return .count(length)
        }
    }
}
