/// HVKVM: HVKit's KVM backend, and the only module that issues KVM ioctls.
///
/// - ``KVM``: the /dev/kvm system handle (API version, capabilities, CPUID and MSR lists).
/// - ``VirtualMachine``: memory slots, in-kernel irqchip and PIT, irqfd, ioeventfd, dirty log.
/// - ``VCPU``: ``VMExit``s decoded from KVM_RUN, registers (with kvm_run sync regs), MSRs,
///   CPUID, LAPIC, MP state, and a ``VCPUKicker`` that gets a vCPU out of the guest.
/// - x86 mode setup: ``VCPU/setupRealMode(codeSegment:offset:stackPointer:)``,
///   ``VCPU/setupProtectedMode(memory:entry:stackPointer:gdtAddress:)`` and
///   ``VCPU/setupLongMode(memory:entry:stackPointer:argument:layout:)``.
/// - Applying a boot plan that HVBoot computed: ``VCPU/setupLinuxBoot(_:memory:)`` enters a
///   `LinuxBootPlan` by the 64-bit protocol or PVH, with ``LinuxEntryMSRs``; ``GuestCPUModel``
///   for CPUID; ``HostVirtualization`` says whether this host's KVM emulates kernel code.
/// - ``VCPURunner``: one host thread per vCPU, exits dispatched to HVCore buses, with SMP,
///   pause and resume, a ``ResetPolicy`` and ``VCPUPlacement``.
/// - ``VCPUScheduler``: many VMs' vCPUs on a few worker threads.
public enum HVKVM {}
