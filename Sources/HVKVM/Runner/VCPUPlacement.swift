/// Which host CPUs a VM's vCPU threads may run on. Pinning keeps a vCPU's caches and KVM's
/// per-CPU state warm and keeps vCPUs of different VMs apart; unpinned threads go wherever
/// the host scheduler puts them.
public enum VCPUPlacement: Sendable, Hashable {
    /// No pinning (the default).
    case unpinned
    /// Every vCPU thread may run on any of these host CPUs.
    case all([Int])
    /// vCPU N runs only on `cpus[N % cpus.count]`: one vCPU per host CPU, round robin.
    case spread([Int])
    /// The listed vCPUs run on their own sets; the others are not pinned.
    case perVCPU([UInt32: [Int]])

    /// The host CPUs vCPU `id` is pinned to, or nil when it is not pinned.
    public func cpus(for id: UInt32) -> [Int]? {
        switch self {
        case .unpinned: return nil
        case let .all(cpus): return cpus
        case let .spread(cpus): return cpus.isEmpty ? [] : [cpus[Int(id) % cpus.count]]
        case let .perVCPU(table): return table[id]
        }
    }
}
