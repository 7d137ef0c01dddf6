import Glibc
import HVCore
import HVKVM
import HVParavirt
import SystemPackage

/// Whether a snapshot holds all of guest RAM or only what changed since the one before.
public enum SnapshotKind: String, Sendable, Hashable, CustomStringConvertible {
    /// Every page (zero pages as holes of the sparse memory file).
    case full
    /// The pages written since the machine's last snapshot, by the guest or by devices;
    /// restored after ``MachineSnapshot/merge(diff:onto:)`` onto that snapshot.
    case diff

    /// The value in words.
    public var description: String { rawValue }
}

/// What ``Machine/snapshot(to:kind:leavePaused:)`` wrote.
public struct SnapshotReport: Sendable, CustomStringConvertible {
    /// The snapshot's directory.
    public let directory: String
    /// Bytes of guest RAM written (pages of zeros are holes in the sparse memory file).
    public let memoryBytesWritten: UInt64
    /// Bytes of guest RAM the memory file covers.
    public let memorySize: UInt64
    /// Bytes of the state file.
    public let stateBytes: Int
    /// Whether every page was saved or only those changed since the last snapshot.
    public let kind: SnapshotKind
    /// How long the vCPUs were paused for it, in nanoseconds (until the resume, or until the
    /// snapshot was complete when the machine stays paused).
    public let pausedNanoseconds: UInt64

    /// The figures in one line.
    public var description: String {
        "\(kind) snapshot in \(directory): \(memoryBytesWritten) of \(memorySize) bytes of RAM written, \(stateBytes) bytes of state, paused \(pausedNanoseconds / 1000) µs"
    }
}

extension Machine {
    // MARK: Snapshot

    /// Saves the running machine into `directory` (created if missing): the vCPUs are paused,
    /// each one's state is taken on its own thread, then the VM's interrupt controllers, PIT
    /// and clock, every device's state and guest RAM are written, and the vCPUs resume unless
    /// `leavePaused`. Files are written beside their final names and renamed into place, the
    /// state file last, so a directory holds either a whole snapshot or none.
    ///
    /// Devices are brought to rest first, on the event loop: disks finish every request
    /// (rate-limited ones included), devices holding receive buffers give them back to their
    /// queues (and take them again once the state is saved). A machine with a device that
    /// cannot save its state (one added with ``add(pio:port:count:name:)`` that is not
    /// `SnapshotStateful`) is refused before anything is paused, naming the device.
    ///
    /// Call it from any thread but the machine's own (a vCPU's, or its event loop's): it waits
    /// for both. A second snapshot of the machine while one is taken is refused.
    ///
    /// `kind` ``SnapshotKind/diff`` writes only the pages that changed since this machine's
    /// last snapshot (full or diff), which needs ``MachineConfiguration/dirtyPageTracking``;
    /// ``MachineSnapshot/merge(diff:onto:)`` applies it to that snapshot's directory.
    @discardableResult
    public func snapshot(to directory: String, kind: SnapshotKind = .full, leavePaused: Bool = false) throws(MachineError) -> SnapshotReport {
        let (runner, scheduled, devices, unsaveable, parent, dispatcher) = try state.withLock { state throws(MachineError) in
            guard state.phase == .running, state.runner != nil || state.scheduled != nil else {
                throw MachineError(.snapshot, reason: "the machine is not running (it is \(state.phase))")
            }
            guard !state.snapshotting else { throw MachineError(.snapshot, reason: "another snapshot of this machine is being taken") }
            state.snapshotting = true
            return (state.runner, state.scheduled, state.statefulDevices, state.unsaveableDevices, state.lastSnapshot, state.dispatcher)
        }
        defer { state.withLock { $0.snapshotting = false } }
        if kind == .diff {
            guard configuration.dirtyPageTracking else {
                throw MachineError(.snapshot, reason: "a diff snapshot needs dirty-page tracking (MachineConfiguration.dirtyPageTracking)")
            }
            guard parent != nil else {
                throw MachineError(.snapshot, reason: "a diff snapshot needs an earlier snapshot of this machine to be the difference from")
            }
        }
        if let device = unsaveable.first {
            throw MachineError(.snapshot, device: device, reason: "this device does not save its state yet, so the machine cannot be saved")
        }
        guard pause() else { throw MachineError(.snapshot, reason: "the machine stopped before it could be paused") }
        let pausedAt = HostClock.monotonicNanoseconds()
        var resumed = false
        defer { if !leavePaused && !resumed { resume() } }

        var archive = SnapshotArchive(producer: "HVKit \(HVKitVersion.current)")
        let lineage = SnapshotLineage(id: UInt64.random(in: 1...UInt64.max), parent: kind == .diff ? parent : nil)
        archive.add(SnapshotLineage.sectionName, version: SnapshotLineage.encodingVersion) { $0.append(lineage) }
        archive.add(SavedMachine.sectionName, version: SavedMachine.encodingVersion) { encoder in
            encoder.append(SavedMachine(name: configuration.name, vcpuCount: configuration.vcpuCount,
                                        interruptControllers: configuration.interruptControllers,
                                        memory: memory.snapshotLayout, devices: devices.map(\.name)))
        }
        for id in 0..<UInt32(configuration.vcpuCount) {
            let saved = try saveVCPU(id, runner: runner, scheduled: scheduled)
            archive.add("vcpu.\(id)", version: VCPUState.encodingVersion) { $0.append(saved) }
        }
        let vmState = try during(.snapshot) { try vm.saveState() }
        archive.add("vm", version: VMState.encodingVersion) { $0.append(vmState) }
        if let dispatcher {
            archive.add(Self.hypercallSection, version: dispatcher.snapshotVersion) { dispatcher.saveState(to: &$0) }
        }
        // On the event loop, between two of its handlers: no notification or completion the
        // devices serve there can run between a device's preparation and its save.
        let saved = events.perform { () -> Result<[(String, UInt16, [UInt8])], MachineError> in
            Self.prepareAndSave(devices)
        }
        // Devices take back what they gave up, whether the machine resumes now or later.
        defer { _ = events.perform { for (_, device) in devices { device.snapshotFinished() } } }
        switch saved {
        case let .success(sections)?:
            for (index, (name, version, bytes)) in sections.enumerated() {
                archive.sections.append(SnapshotSection(name: Self.deviceSection(index, name), version: version, payload: bytes))
            }
        case let .failure(error)?: throw error
        case nil: throw MachineError(.snapshot, reason: "the event loop stopped")
        }

        // What changed since the last snapshot; taken (and so reset) by every snapshot, once
        // the devices are at rest and their writes are done.
        let changed = configuration.dirtyPageTracking ? try changedPages() : nil
        if kind == .diff, let changed {
            archive.add(SnapshotDiff.sectionName, version: SnapshotDiff.encodingVersion) { $0.append(SnapshotDiff(pages: changed)) }
        }

        guard unsafe mkdir(directory, 0o755) == 0 || errno == EEXIST else {
            throw MachineError(.snapshot, reason: "creating \(directory): \(Errno(rawValue: errno))")
        }
        var written: UInt64 = 0
        try writeReplacing(directory + "/" + MachineSnapshot.memoryFileName) { (file, path) throws(SnapshotError) in
            if kind == .diff, let changed {
                written = try self.memory.writeSnapshot(to: file, path: path, pages: changed)
            } else {
                written = try self.memory.writeSnapshot(to: file, path: path)
            }
        }
        let bytes = archive.encoded()
        try writeReplacing(directory + "/" + MachineSnapshot.stateFileName, bytes: bytes, step: .snapshot)
        state.withLock { $0.lastSnapshot = lineage.id }
        if !leavePaused {
            resume()
            resumed = true
        }
        let report = SnapshotReport(directory: directory, memoryBytesWritten: written, memorySize: memory.ramSize,
                                    stateBytes: bytes.count, kind: kind, pausedNanoseconds: HostClock.monotonicNanoseconds() - pausedAt)
        logger.info("snapshot taken", metadata: ["directory": "\(directory)", "memory-written": "\(written)",
                                                 "paused-us": "\(report.pausedNanoseconds / 1000)"])
        return report
    }

    /// The pages of each region written since the last snapshot: KVM's dirty log (the
    /// guest's writes) and the VMM's own log (devices, services). Reading both resets them.
    private func changedPages() throws(MachineError) -> [[UInt64]] {
        let written = memory.takeWrittenPages()
        var pages: [[UInt64]] = []
        for (index, slot) in memorySlots.enumerated() {
            let dirty = try during(.snapshot) { try vm.dirtyPages(slot: slot) }
            pages.append(Self.union(ascending: dirty, index < written.count ? written[index] : []))
        }
        return pages
    }

    /// The pages in either list, ascending and each once. Both logs come out of bitmaps in
    /// ascending order, so one merge pass does what hashing every page into a set and sorting
    /// the union did (a millisecond for a full 128 MiB machine).
    static func union(ascending first: [UInt64], _ second: [UInt64]) -> [UInt64] {
        var merged: [UInt64] = []
        merged.reserveCapacity(first.count + second.count)
        var (i, j) = (0, 0)
        while i < first.count || j < second.count {
            let next: UInt64
            if j == second.count || (i < first.count && first[i] <= second[j]) {
                next = first[i]
                i += 1
            } else {
                next = second[j]
                j += 1
            }
            if merged.last != next { merged.append(next) }
        }
        return merged
    }

    /// The section of the hypercall dispatcher's state (its shared-memory channel), present
    /// when the saved guest had hypercall services.
    static let hypercallSection = "hypercalls"

    /// The section of the `index`th device, `name`: by position, as a device may be on two
    /// buses under one name (a port and an MMIO window).
    static func deviceSection(_ index: Int, _ name: String) -> String {
        "device.\(index).\(name)"
    }

    /// Prepares every device (requests finished, held buffers given back), then saves each.
    private static func prepareAndSave(_ devices: [(name: String, device: any SnapshotStateful)]) -> Result<[(String, UInt16, [UInt8])], MachineError> {
        for (name, device) in devices {
            do throws(SnapshotError) { try device.prepareSnapshot() } catch {
                return .failure(MachineError(.snapshot, device: name, error))
            }
        }
        return .success(devices.map { name, device in
            var encoder = SnapshotEncoder()
            device.saveState(to: &encoder)
            return (name, device.snapshotVersion, encoder.bytes)
        })
    }

    /// vCPU `id`'s state, taken on the thread that owns it while the machine is paused.
    private func saveVCPU(_ id: UInt32, runner: VCPURunner?, scheduled: ScheduledVM?) throws(MachineError) -> VCPUState {
        let result: Result<VCPUState, KVMError>?
        if let runner {
            result = runner.withPausedVCPU(id) { vcpu in Result { () throws(KVMError) in try vcpu.saveState() } }
        } else if let scheduled {
            do throws(KVMError) {
                result = try scheduled.withPausedVCPU(id) { vcpu throws(KVMError) in try vcpu.saveState() }.map { .success($0) }
            } catch {
                result = .failure(error)
            }
        } else {
            result = nil
        }
        switch result {
        case let .success(state)?: return state
        case let .failure(error)?: throw MachineError(.snapshot, device: "vCPU \(id)", error)
        case nil: throw MachineError(.snapshot, device: "vCPU \(id)", reason: "the vCPU is not running")
        }
    }

    // MARK: Restore

    /// A machine shaped as the one `snapshot` saved: its vCPU count, interrupt controllers and
    /// RAM, the RAM mapped copy-on-write from the snapshot's memory file (nothing is read until
    /// the guest touches it). The other settings come from `configuration`. Then add the same
    /// devices in the same order as the saved machine, call ``restore(hypercalls:)`` instead
    /// of `load`, and start it:
    ///
    /// ```swift
    /// let snapshot = try MachineSnapshot(directory: "/var/lib/vm/snap")
    /// let machine = try Machine(restoring: snapshot)
    /// try machine.addLegacyDevices(console: FileDescriptorSink(.standardOutput))
    /// try machine.restore()
    /// try machine.start()
    /// ```
    ///
    /// With `copyingMemory`, RAM is instead fresh memory into which the memory file is read
    /// now (an eager restore: slower to start, but independent of the file afterwards).
    public convenience init(restoring snapshot: MachineSnapshot, _ configuration: MachineConfiguration = MachineConfiguration(),
                            copyingMemory: Bool = false) throws(MachineError) {
        guard snapshot.diff == nil else {
            throw MachineError(.restore, reason: "\(snapshot.directory) holds only what changed since another snapshot: merge it onto that one first (MachineSnapshot.merge(diff:onto:))")
        }
        var shaped = configuration
        shaped.vcpuCount = snapshot.machine.vcpuCount
        shaped.interruptControllers = snapshot.machine.interruptControllers
        shaped.memorySize = snapshot.machine.memorySize
        let mapped = try during(.restore) {
            try GuestMemoryMmap.restoredLayout(snapshot.machine.memory, file: snapshot.memoryFile, path: snapshot.memoryPath,
                                               options: configuration.memoryOptions)
        }
        shaped.restoredMemory = copyingMemory
            ? mapped.map { MemoryRegionSpec(start: $0.start, size: $0.size, options: $0.options) }
            : mapped
        try self.init(shaped)
        if copyingMemory {
            try during(.restore) {
                try memory.readSnapshot(from: snapshot.memoryFile, path: snapshot.memoryPath, layout: snapshot.machine.memory)
            }
        }
        state.withLock { $0.restoring = snapshot }
    }

    /// Puts the snapshot's state back (instead of ``load(_:)``): every device's, the
    /// interrupt controllers', the PIT's and the clock's now, each vCPU's on its own thread
    /// when ``start(onVCPUReady:)`` runs it. Checks first that the devices added match the
    /// saved machine's, and that this host has every CPU feature the guest was using, and
    /// refuses naming the first difference. A unikernel's hypercall services are given again
    /// as `hypercalls` (they are host code, not saved state); the dispatcher's own state, the
    /// channel its guest set up, comes back from the snapshot, which refuses a restore without
    /// them when the saved guest had them.
    public func restore(hypercalls: HypercallTable? = nil) throws(MachineError) {
        let (snapshot, devices, unsaveable) = try state.withLock { state throws(MachineError) in
            guard state.phase == .composing else {
                throw MachineError(.restore, reason: "a guest is already loaded (the machine is \(state.phase))")
            }
            guard let snapshot = state.restoring else {
                throw MachineError(.restore, reason: "the machine was not made from a snapshot (Machine(restoring:))")
            }
            return (snapshot, state.statefulDevices, state.unsaveableDevices)
        }
        if let device = unsaveable.first {
            throw MachineError(.restore, device: device, reason: "this device does not restore its state yet")
        }
        let saved = snapshot.machine.devices
        guard devices.map(\.name) == saved else {
            throw MachineError(.restore, reason: "the snapshot's devices are \(saved); this machine has \(devices.map(\.name))")
        }
        var vcpus: [UInt32: VCPUState] = [:]
        for id in 0..<UInt32(configuration.vcpuCount) {
            vcpus[id] = try during(.restore, device: "vCPU \(id)") { try snapshot.vcpuState(id) }
        }
        if let cpuid = vcpus[0]?.cpuid {
            let supported = try during(.restore) { try kvm.supportedCPUID() }
            let missing = CPUFeatureCheck.missingFeatures(saved: cpuid, supported: supported)
            guard missing.isEmpty else {
                throw MachineError(.restore, reason: "this host lacks CPU features the guest was using: \(missing.joined(separator: ", "))")
            }
        }
        for (index, (name, device)) in devices.enumerated() {
            do throws(SnapshotError) {
                try snapshot.archive.section(Self.deviceSection(index, name)).restore(into: device)
            } catch {
                throw MachineError(.restore, device: name, error)
            }
        }
        let vmState = try during(.restore) { try snapshot.vmState() }
        try during(.restore) { try vm.restoreState(vmState) }
        let dispatcher = hypercalls.map { HypercallDispatcher(memory: memory, table: $0) }
        if let section = snapshot.archive.sections.first(where: { $0.name == Self.hypercallSection }) {
            guard let dispatcher else {
                throw MachineError(.restore, device: Self.hypercallSection,
                                   reason: "the saved guest makes hypercalls: give its services again (restore(hypercalls:))")
            }
            do throws(SnapshotError) { try section.restore(into: dispatcher) } catch {
                throw MachineError(.restore, device: Self.hypercallSection, error)
            }
        }
        try state.withLock { state throws(MachineError) in
            guard state.phase == .composing else {
                throw MachineError(.restore, reason: "the machine changed while it was restored (it is \(state.phase))")
            }
            state.phase = .loaded
            state.boot = .restored(vcpus)
            state.lastSnapshot = snapshot.lineage.id
            state.traps = dispatcher?.trapSites ?? [:]
            state.dispatcher = dispatcher
        }
        logger.info("machine restored", metadata: ["snapshot": "\(snapshot.directory)", "vcpus": "\(vcpus.count)"])
    }
}
