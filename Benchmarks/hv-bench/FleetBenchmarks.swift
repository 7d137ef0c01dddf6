import Glibc
import GuestImages
import HVDevicesTesting
import HVMachine

// What one more VM costs a process that runs many: the figure behind "many VMs on a few
// workers". A standalone VMM pays its whole footprint per VM; under one VCPUScheduler the
// executable, the runtime and the worker threads are paid once.

/// `vmCount` machines of the built-in guest (hello, with its four services and 8 MiB of RAM)
/// on one VCPUScheduler with 2 workers and one shared event loop, each run to its exit and
/// still held: (resident memory outside guest RAM − the same with no VM yet) / `vmCount`, KiB.
/// "Outside guest RAM" is VmRSS less every machine's resident guest pages (mincore), so the
/// figure is what the VMM side of a VM costs: its Machine, buses, devices, hypercall table,
/// vCPU (with KVM's shared run page) and statistics.
func fleetRSSPerVMFigure(vmCount: Int = 100) throws -> Figure {
    let events = try EventLoop(name: "fleet-rss")
    defer { events.shutdown() }
    let scheduler = try VCPUScheduler(workers: 2)
    defer { scheduler.shutdown() }
    // One VM run first and let go, so that what any first VM sets up once for the whole
    // process (KVM's supported CPUID, the guest image parsed, lazily bound symbols) is in
    // the baseline and not charged to the hundred.
    let first = try FleetMember(events: events)
    try first.machine.start(on: scheduler)
    _ = first.machine.wait()

    let before = try processStatus()
    var fleet: [FleetMember] = []
    fleet.reserveCapacity(vmCount)
    for _ in 0..<vmCount { fleet.append(try FleetMember(events: events)) }
    for member in fleet { try member.machine.start(on: scheduler) }
    for member in fleet {
        let reason = member.machine.wait().stopReason
        guard !member.console.bytes.isEmpty else {
            throw BenchError.unexpected("a fleet VM said nothing before it stopped (\(reason))")
        }
    }
    let after = try processStatus()
    var guestResident = 0
    for member in fleet {
        do { guestResident += Int(try member.machine.memory.residentBytes()) } catch {
            throw BenchError.unexpected("mincore failed: \(error)")
        }
    }
    withExtendedLifetime(fleet) {}

    let outside = (after["VmRSS"] ?? 0) - guestResident - (before["VmRSS"] ?? 0)
    let anonymous = (after["RssAnon"] ?? 0) - guestResident - (before["RssAnon"] ?? 0)
    return Figure(name: "fleet_rss_per_vm", value: Double(outside) / Double(vmCount) / 1024, baseline: nil, unit: "KiB",
                  note: "\(vmCount) built-in-guest VMs run to their exit on one VCPUScheduler, still held: (VmRSS − guest pages) grew"
                      + " \(outside >> 10) KiB, \(anonymous >> 10) KiB of it anonymous; guest pages \(guestResident >> 10) KiB in all; goal ≤ 256 KiB")
}

/// One fleet VM: the built-in guest loaded with its services, its console kept.
private struct FleetMember {
    let machine: Machine
    let console = CollectingSink()

    init(events: EventLoop) throws {
        var configuration = MachineConfiguration(memorySize: 8 << 20)
        configuration.interruptControllers = false
        configuration.sharedEventLoop = events
        machine = try Machine(configuration)
        try machine.load(.unikernel(image: GuestImages.hello, hypercalls: try .essentials(console: console)))
    }
}
