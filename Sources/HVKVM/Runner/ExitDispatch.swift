import HVCore
import Logging

/// What a vCPU does with an exit, shared by ``VCPURunner`` (a thread per vCPU) and
/// ``VCPUScheduler`` (vCPUs multiplexed on workers): the embedder's exit handler first, then
/// register traps (hypercalls), then the port-I/O and MMIO buses, then the exits that end a
/// run. It holds no state of its own beyond what it was built with, so one value serves every
/// vCPU of a VM, on any thread.
struct ExitDispatch: Sendable {
    /// What to do after an exit.
    enum Disposition {
        case resume
        case stop(StopReason)
        /// A trap is waiting (a hypercall poll): keep the vCPU out of the guest until `wait`
        /// ends, then call ``retry(_:vcpu:)`` with `pending`.
        case wait(TrapWait, PendingTrap)
    }

    /// A trap call that waits, to be made again when its wait ends.
    struct PendingTrap: Sendable {
        let trap: any RegisterTrap
        let site: TrapSite
        let value: UInt64
    }

    let pio: Bus
    let mmio: Bus
    let traps: [TrapSite: any RegisterTrap]
    // The traps split by kind into small arrays: a linear scan of one or two entries costs
    // less per exit than hashing a TrapSite.
    private let portTraps: [(port: UInt16, trap: any RegisterTrap)]
    private let mmioTraps: [(address: GuestAddress, trap: any RegisterTrap)]
    private let vmcallTrap: (any RegisterTrap)?
    let exitHandler: VCPURunner.ExitHandler?
    let logger: Logger

    init(pio: Bus, mmio: Bus, traps: [TrapSite: any RegisterTrap], exitHandler: VCPURunner.ExitHandler?, logger: Logger) {
        self.pio = pio
        self.mmio = mmio
        self.traps = traps
        var portTraps: [(port: UInt16, trap: any RegisterTrap)] = []
        var mmioTraps: [(address: GuestAddress, trap: any RegisterTrap)] = []
        for (site, trap) in traps {
            switch site {
            case let .port(port): portTraps.append((port, trap))
            case let .mmio(address): mmioTraps.append((address, trap))
            case .vmcall: break
            }
        }
        self.portTraps = portTraps
        self.mmioTraps = mmioTraps
        vmcallTrap = traps[.vmcall]
        self.exitHandler = exitHandler
        self.logger = logger
    }

    /// Prepares a freshly set-up vCPU: with traps, its general registers are synced through
    /// kvm_run (where the host can), so a trap costs one exit and no register ioctls.
    func prepare(_ vcpu: VCPU) throws(KVMError) {
        if !traps.isEmpty, !vcpu.syncedRegisterSets.contains(.general), vcpu.vm.kvm.has(.syncRegisters) {
            try vcpu.enableSyncRegisters(vcpu.syncedRegisterSets.union(.general))
        }
    }

    /// Tells every trap once that the VM is stopping, so that any that wait (a hypercall
    /// poll) return.
    func notifyTrapsOfStop() {
        var told = Set<ObjectIdentifier>()
        for trap in traps.values where told.insert(ObjectIdentifier(trap)).inserted { trap.vmStopping() }
    }

    /// Handles one exit of `vcpu` and counts it.
    func handle(_ exit: VMExit, vcpu: VCPU, counters: VCPUCounters) -> Disposition {
        let id = vcpu.id
        counters.exits.add(1, ordering: .relaxed)
        let trapped = trap(for: exit)
        counters.count(exit, trapped: trapped != nil)
        if let exitHandler, let action = exitHandler(vcpu, exit) {
            switch action {
            case .resume: return .resume
            case let .stop(reason): return .stop(reason)
            }
        }
        if let trapped {
            return handleTrap(trapped.trap, at: trapped.site, value: trapped.value, vcpu: vcpu)
        }
        switch exit {
        case let .ioOut(port, size, data):
            guard let width = AccessWidth(byteCount: size) else { return .stop(.unhandledExit(vcpu: id, exit: "out of size \(size)")) }
            for element in 0..<(data.count / size) {
                pio.write(at: GuestAddress(UInt64(port)), width: width, value: data.value(element: element, width: size))
            }
        case let .ioIn(port, size, data):
            guard let width = AccessWidth(byteCount: size) else { return .stop(.unhandledExit(vcpu: id, exit: "in of size \(size)")) }
            for element in 0..<(data.count / size) {
                data.setValue(pio.read(at: GuestAddress(UInt64(port)), width: width), element: element, width: size)
            }
        case let .mmioWrite(address, data):
            if let width = AccessWidth(byteCount: data.count) {
                mmio.write(at: address, width: width, value: data.value(width: data.count))
            } else {
                // Odd lengths (3, 5, 6, 7 bytes) match no device register: dropped like any
                // write to nothing.
                logger.debug("MMIO write of odd length dropped", metadata: ["vcpu": "\(id)", "address": "\(address)", "length": "\(data.count)"])
            }
        case let .mmioRead(address, data):
            if let width = AccessWidth(byteCount: data.count) {
                data.setValue(mmio.read(at: address, width: width), width: data.count)
            } else {
                for index in 0..<data.count { data[index] = 0xFF }
            }
        case .interrupted, .interruptWindowOpen:
            break
        case .halt:
            return .stop(.halted(vcpu: id))
        case .shutdown:
            return .stop(.shutdown(vcpu: id))
        case let .systemEvent(event):
            return .stop(.systemEvent(event, vcpu: id))
        case let .internalError(suberror, data):
            return .stop(.internalError(vcpu: id, suberror: suberror, data: data))
        case let .failEntry(reason, _):
            return .stop(.failEntry(vcpu: id, reason: reason))
        case let .hypercall(number, _, _):
            // Only reached without a vmcall trap.
            return .stop(.unhandledExit(vcpu: id, exit: "hypercall \(number)"))
        case let .exception(number, errorCode):
            return .stop(.unhandledExit(vcpu: id, exit: "exception \(number) (error code \(errorCode))"))
        case .debug:
            return .stop(.unhandledExit(vcpu: id, exit: "debug"))
        case let .unknown(reason):
            return .stop(.unhandledExit(vcpu: id, exit: "KVM exit reason \(reason)"))
        }
        return .resume
    }

    /// The register trap `exit` goes to instead of a bus, with the value the guest wrote.
    ///
    /// A doorbell is one 4-byte write: `outl` to a port trap (not `outb` or `outw`, and not a
    /// `rep outs`, whose bytes come from memory and could name calls the guest never put in a
    /// register), or one 4-byte store to an MMIO trap. Any other write goes to the bus as
    /// usual: it reaches no device there and is dropped and counted (`Bus.unhandledWrites`).
    func trap(for exit: VMExit) -> (site: TrapSite, trap: any RegisterTrap, value: UInt64)? {
        switch exit {
        case let .ioOut(port, size, data):
            guard !portTraps.isEmpty, let trap = portTraps.first(where: { $0.port == port })?.trap else { return nil }
            guard size == 4, data.count == 4 else { return nil }
            return (.port(port), trap, data.value(width: 4))
        case let .mmioWrite(address, data):
            guard !mmioTraps.isEmpty, let trap = mmioTraps.first(where: { $0.address == address })?.trap else { return nil }
            guard data.count == 4 else { return nil }
            return (.mmio(address), trap, data.value(width: 4))
        case .hypercall:
            return vmcallTrap.map { (.vmcall, $0, 0) }
        default:
            return nil
        }
    }

    /// Makes a waiting trap call again, now that its wait has ended.
    func retry(_ pending: PendingTrap, vcpu: VCPU) -> Disposition {
        handleTrap(pending.trap, at: pending.site, value: pending.value, vcpu: vcpu)
    }

    /// Runs a trap handler with the vCPU's registers and writes back what it changed. For a
    /// forwarded `vmcall`, KVM sets RAX from kvm_run's hypercall result on the next entry, so
    /// the handler's RAX goes there too.
    private func handleTrap(_ trap: any RegisterTrap, at site: TrapSite, value: UInt64, vcpu: VCPU) -> Disposition {
        var registers: Registers
        do { registers = try vcpu.registers() } catch { return .stop(.failed(vcpu: vcpu.id, error: error)) }
        let before = registers
        let outcome = trap.trap(at: site, value: value, vcpu: vcpu.id, registers: &registers)
        if registers != before {
            do { try vcpu.setRegisters(registers) } catch { return .stop(.failed(vcpu: vcpu.id, error: error)) }
        }
        switch outcome {
        case .resume:
            if site == .vmcall { vcpu.setHypercallResult(registers.rax) }
            return .resume
        case let .stop(request):
            return .stop(.guestRequested(request, vcpu: vcpu.id))
        case let .wait(wait):
            // Built only here: the common case passes the trap along without copying it.
            return .wait(wait, PendingTrap(trap: trap, site: site, value: value))
        }
    }
}
