/// HVBoot: guest images and boot data, hypervisor-agnostic (as rust-vmm's linux-loader). It
/// computes where things go in guest memory and what a vCPU must look like at entry; applying
/// that to a vCPU is the hypervisor backend's job (HVKVM's `VCPU.setupLinuxBoot`).
///
/// - ELF: ``ELF64Image`` (validated ELF64 executables, loaded by physical address) and their
///   ``ELFNote``s; every field of a hostile image is checked before use.
/// - Linux: ``BzImage`` and its ``LinuxSetupHeader``; ``LinuxKernel`` with host-side extraction
///   of a bzImage's compressed kernel (gzip, xz, lz4, zstd, through the system's libraries
///   opened when first needed); ``LinuxLoader`` in three steps (plan, check, write) producing a
///   ``LinuxBootPlan`` with the ``ZeroPage`` and ``E820Map``, or the PVH ``PVHStartInfo``.
/// - Tables that describe the machine: ``ACPITables`` (RSDP, XSDT, FADT, MADT, and a DSDT
///   declaring virtio-mmio devices) and the ``MPTable``.
/// - x86 layout: ``LongModeLayout``, where the long-mode GDT and identity page tables go.
public enum HVBoot {}
