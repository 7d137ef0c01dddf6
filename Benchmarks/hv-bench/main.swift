// hv-bench: HVKit's benchmark program. Each figure is measured next to a baseline taken in
// the same run (a C program doing the same KVM work), because these machines are shared and
// noisy: compare the ratio, not the absolute value.
//
//   hv-bench                  all figures, one readable line each
//   hv-bench --json [NAME...] one JSON object per line; only the named figures if any
import Glibc
import CBenchBaseline
import HVKVM

hvb_line_buffer_stdout()  // One line at a time, even into a pipe.

let allNames = [
    "rss_outside_guest", "fleet_rss_per_vm", "pio_exit", "mmio_exit", "vm_create",
    "blk_read_4k_qd1", "blk_read_64k_qd32", "blk_write_64k_qd32", "blk_flush", "blk_cpu_per_request",
    "blk_read_4k_qd1_sync", "blk_read_64k_qd32_sync", "blk_write_64k_qd32_sync",
    "blk_read_64k_qd32_direct", "blk_read_64k_qd32_direct_sync",
    "blk_read_4k_qd1_uring", "blk_read_64k_qd32_uring", "blk_write_64k_qd32_uring", "blk_read_64k_qd32_direct_uring", "blk_cpu_per_request_uring",
    "blk_notify_budget_latency", "blk_notify_budget_latency_aio", "rate_limit_accuracy",
    "net_tx_64k", "net_rx_64k", "net_cpu_per_frame", "vsock_stream_throughput", "vsock_connect_latency",
    "null_hypercall", "block_via_hypercall", "block_via_ring",
    "pause_latency", "mn_vs_dedicated", "vms_per_second", "vcpu_migration",
    "bzimage_extract", "startup_to_first_run", "minivmm_rss", "minivmm_private_rss", "banner_vs_qemu",
    "compose_to_first_run", "linux_boot_to_init", "linux_blk_dd",
    "snapshot_full_128m", "snapshot_diff", "restore_to_first_run", "restore_1g_to_first_run", "clone_rss",
]

var arguments = Array(CommandLine.arguments.dropFirst())
let json = arguments.contains("--json")
arguments.removeAll { $0 == "--json" }
if let unknown = arguments.first(where: { !allNames.contains($0) }) {
    print("hv-bench: unknown figure '\(unknown)'; known: \(allNames.joined(separator: ", "))")
    exit(2)
}
// The RSS figures first, before the other figures' allocations grow the heap (memory they free
// would be reused by a later figure's VMs and hide part of their cost).
let selected = allNames.filter { arguments.isEmpty || arguments.contains($0) }

// The block, network and vsock figures need no KVM; the others do.
if selected.contains(where: { !$0.hasPrefix("blk_") && !$0.hasPrefix("net_") && !$0.hasPrefix("vsock_") && $0 != "rate_limit_accuracy" }), let reason = KVM.unavailabilityReason() {
    print("hv-bench: \(reason)")
    exit(1)
}

func format(_ value: Double) -> String {
    guard value.isFinite else { return "null" }
    let scaled = (value * 1000).rounded() / 1000
    return "\(scaled)"
}

func emit(_ figure: Figure) {
    if json {
        let baseline = figure.baseline.map(format) ?? "null"
        let ratio = figure.ratio.map(format) ?? "null"
        print("{\"name\": \"\(figure.name)\", \"value\": \(format(figure.value)), \"baseline\": \(baseline), \"ratio\": \(ratio), \"unit\": \"\(figure.unit)\"}")
    } else {
        let against = figure.baseline.map { " vs baseline \(format($0)) \(figure.unit), ratio \(format(figure.value / $0))" } ?? ""
        print("\(figure.name): \(format(figure.value)) \(figure.unit)\(against)  (\(figure.note))")
    }
}

/// The block figures share one scratch disk, made when the first of them runs.
var scratchDisk: ScratchDisk?
@MainActor func disk() throws -> ScratchDisk {
    if let scratchDisk { return scratchDisk }
    let made = try ScratchDisk()
    scratchDisk = made
    return made
}

let read4k = BlockWorkload(write: false, requestSize: 4 << 10, depth: 1, requests: 4096)
let read64k = BlockWorkload(write: false, requestSize: 64 << 10, depth: 32, requests: 1024)
let write64k = BlockWorkload(write: true, requestSize: 64 << 10, depth: 32, requests: 1024)
let read64kDirect = BlockWorkload(write: false, requestSize: 64 << 10, depth: 32, requests: 1024, direct: true)

var failed = false
for name in selected {
    do {
        switch name {
        case "rss_outside_guest": emit(try rssOutsideGuestFigure())
        case "fleet_rss_per_vm": emit(try fleetRSSPerVMFigure())
        case "pio_exit": emit(try exitFigure(.pio, rounds: 7, exits: 20_000))
        case "mmio_exit": emit(try exitFigure(.mmio, rounds: 7, exits: 20_000))
        case "vm_create": emit(try vmCreateFigure(rounds: 21))
        case "blk_read_4k_qd1": emit(try blockThroughputFigure(name: name, read4k, backend: .aio, rounds: 7, disk: disk()))
        case "blk_read_64k_qd32": emit(try blockThroughputFigure(name: name, read64k, backend: .aio, rounds: 7, disk: disk()))
        case "blk_write_64k_qd32": emit(try blockThroughputFigure(name: name, write64k, backend: .aio, rounds: 7, disk: disk()))
        case "blk_flush": emit(try blockFlushFigure(rounds: 7, disk: disk()))
        case "blk_cpu_per_request": emit(try blockCPUFigure(backend: .aio, rounds: 7, disk: disk()))
        case "blk_read_4k_qd1_sync": emit(try blockThroughputFigure(name: name, read4k, backend: .sync, rounds: 7, disk: disk()))
        case "blk_read_64k_qd32_sync": emit(try blockThroughputFigure(name: name, read64k, backend: .sync, rounds: 7, disk: disk()))
        case "blk_write_64k_qd32_sync": emit(try blockThroughputFigure(name: name, write64k, backend: .sync, rounds: 7, disk: disk()))
        case "blk_read_64k_qd32_direct": emit(try blockThroughputFigure(name: name, read64kDirect, backend: .aio, rounds: 5, disk: disk()))
        case "blk_read_64k_qd32_direct_sync": emit(try blockThroughputFigure(name: name, read64kDirect, backend: .sync, rounds: 5, disk: disk()))
        case "blk_read_4k_qd1_uring": emit(try blockThroughputFigure(name: name, read4k, backend: .uring, rounds: 7, disk: disk()))
        case "blk_read_64k_qd32_uring": emit(try blockThroughputFigure(name: name, read64k, backend: .uring, rounds: 7, disk: disk()))
        case "blk_write_64k_qd32_uring": emit(try blockThroughputFigure(name: name, write64k, backend: .uring, rounds: 7, disk: disk()))
        case "blk_read_64k_qd32_direct_uring": emit(try blockThroughputFigure(name: name, read64kDirect, backend: .uring, rounds: 5, disk: disk()))
        case "blk_cpu_per_request_uring": emit(try blockCPUFigure(backend: .uring, rounds: 7, disk: disk()))
        case "blk_notify_budget_latency": emit(try blockNotifyBudgetFigure(name: name, backend: .sync, rounds: 5, disk: disk()))
        case "rate_limit_accuracy": emit(try rateLimitAccuracyFigure(rounds: 3, disk: disk()))
        case "blk_notify_budget_latency_aio": emit(try blockNotifyBudgetFigure(name: name, backend: .aio, rounds: 5, disk: disk()))
        case "net_tx_64k": emit(try netTransmitFigure(rounds: 7))
        case "net_rx_64k": emit(try netReceiveFigure(rounds: 7))
        case "net_cpu_per_frame": emit(try netCPUPerFrameFigure(rounds: 7))
        case "vsock_stream_throughput": emit(try vsockThroughputFigure(rounds: 5))
        case "vsock_connect_latency": emit(try vsockConnectLatencyFigure(rounds: 4))
        case "null_hypercall": emit(try nullHypercallFigure(rounds: 7, calls: 20_000))
        case "block_via_hypercall", "block_via_ring":
            // Measured together (alternating rounds); printed once, at the first of the two selected.
            guard name == selected.first(where: { $0.hasPrefix("block_via_") }) else { break }
            for figure in try blockViaParavirtFigures(rounds: 7) where selected.contains(figure.name) { emit(figure) }
        case "pause_latency": emit(try pauseLatencyFigure(rounds: 51))
        case "mn_vs_dedicated": emit(try mnVersusDedicatedFigure(rounds: 3))
        case "vms_per_second": emit(try vmsPerSecondFigure(rounds: 7))
        case "vcpu_migration": emit(try vcpuMigrationFigure(rounds: 7))
        case "bzimage_extract": emit(try bzImageExtractFigure(rounds: 7))
        case "startup_to_first_run", "minivmm_rss", "minivmm_private_rss":
            // Measured together; printed once, at the first of them selected.
            let together = ["startup_to_first_run", "minivmm_rss", "minivmm_private_rss"]
            guard name == selected.first(where: together.contains) else { break }
            for figure in try minivmmFigures(rounds: 11) where selected.contains(figure.name) { emit(figure) }
        case "banner_vs_qemu": emit(try bannerVersusQEMUFigure(rounds: 3))
        case "linux_boot_to_init": emit(try linuxBootToInitFigure(rounds: 3))
        case "compose_to_first_run": emit(try composeToFirstRunFigure(rounds: 11))
        case "linux_blk_dd": emit(try linuxBlockDDFigure(rounds: 3))
        case "snapshot_full_128m": emit(try snapshotFullFigure(rounds: 5))
        case "snapshot_diff": emit(try snapshotDiffFigure(rounds: 5))
        case "restore_to_first_run", "restore_1g_to_first_run":
            // Measured together; printed once, at the first of them selected.
            guard name == selected.first(where: { $0.hasPrefix("restore_") }) else { break }
            for figure in try restoreFigures(rounds: 7) where selected.contains(figure.name) { emit(figure) }
        case "clone_rss": emit(try cloneRSSFigure())
        default: break
        }
    } catch {
        print("hv-bench: \(name): \(error)")
        failed = true
    }
}
// exit() runs no deinitializers: the scratch disk (64 MiB in /var/tmp) is removed here, or
// every run would leave one behind.
scratchDisk = nil
exit(failed ? 1 : 0)
