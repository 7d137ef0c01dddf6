import Glibc
import HVCore
import HVKVM
import HVMachine
import SystemPackage

// The Linux test guest's figures (Guests/linux, built by `make artifacts`): the same kernel and
// initramfs under minivmm and under QEMU's microvm machine, in alternating rounds.

let linuxGuestDirectory: String = {
    if let path = getenv("HVKIT_ARTIFACTS") { return String(cString: path) + "/linux" }
    return "/var/tmp/hvkit-artifacts/linux"
}()

/// The Linux test guest's command line for this host (what an emulating host needs included),
/// without earlyprintk so that both VMMs print the same lines.
func linuxTestCommandLine(tests: String) -> String {
    (["console=ttyS0", "reboot=k", "panic=-1"] + BootSource.emulatedHostParameters + ["hvkit.tests=\(tests)"])
        .joined(separator: " ")
}

/// QEMU with the CPU restrictions this host needs: no CMPXCHG16B (refused by the emulator), and
/// XSAVEERPTR, without which qemu64 makes the kernel take an FXSAVE-leak workaround made of
/// MMX instructions the emulator refuses.
func qemuMicroVM(memory: Int, extra: [String]) throws -> [String] {
    let qemu = "/usr/bin/qemu-system-x86_64"
    guard access(qemu, X_OK) == 0 else {
        throw BenchError.unexpected("needs \(qemu): apt-get install qemu-system-x86 (`make bench` does)")
    }
    return [qemu, "-M", "microvm", "-accel", "kvm", "-cpu", "qemu64,-cx16,+xsaveerptr", "-m", "\(memory)", "-smp", "1",
            "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio"] + extra
}

/// Spawn to the init's first line (HVKIT-INIT): minivmm against QEMU microvm, the same
/// vmlinux (by PVH), initramfs, command line, 128 MiB and one vCPU. Seconds, median of `rounds`.
func linuxBootToInitFigure(rounds: Int) throws -> Figure {
    let minivmm = try executableBesideBench("minivmm")
    let vmlinux = linuxGuestDirectory + "/vmlinux", initramfs = linuxGuestDirectory + "/initramfs.cpio"
    for path in [vmlinux, initramfs] where access(path, R_OK) != 0 {
        throw BenchError.unexpected("needs \(path): run `make artifacts`")
    }
    let commandLine = linuxTestCommandLine(tests: "")
    let ours = [minivmm, "--kernel", vmlinux, "--initrd", initramfs, "--cmdline", commandLine, "--memory", "128", "--cpus", "1"]
    let theirs = try qemuMicroVM(memory: 128, extra: ["-kernel", vmlinux, "-initrd", initramfs, "-append", commandLine])
    var oursSeconds: [Double] = []
    var theirsSeconds: [Double] = []
    for _ in 0..<rounds {
        oursSeconds.append(try timeToOutput(ours, marker: "HVKIT-INIT", limit: 600) / 1e9)
        theirsSeconds.append(try timeToOutput(theirs, marker: "HVKIT-INIT", limit: 600) / 1e9)
    }
    return Figure(name: "linux_boot_to_init", value: median(oursSeconds), baseline: median(theirsSeconds), unit: "s",
                  note: "spawn to the init's first line, Linux test guest by PVH, 128 MiB, 1 vCPU, median of \(rounds) alternating; baseline: qemu-system-x86_64 -M microvm, same kernel, initramfs and command line; goal ratio ≤ 1.0")
}
