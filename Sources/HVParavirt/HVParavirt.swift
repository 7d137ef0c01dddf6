import HVCore

/// HVParavirt: the hypercall ABI a guest uses to call the host, its dispatch, the built-in
/// paravirtual services and the guest-side SDK. It talks to the hypervisor only through
/// HVCore protocols (``RegisterTrap``, ``GuestMemory``), never through HVKVM.
///
/// - The ABI: ``HypercallABI``, ``HypercallNumber``, ``HypercallErrno``, ``ParavirtInfo``,
///   ``ChannelLayout`` (docs/ABI.md has the whole specification).
/// - Dispatch: a ``HypercallTable`` of handlers, and the ``HypercallDispatcher`` that decodes
///   traps, runs handlers, answers the shared-memory channel and keeps statistics.
/// - Services: ``ConsoleService``, ``ClockService``, ``RandomService``, ``BlockService``,
///   ``NetService`` (over a ``FrameBackend`` such as ``InProcessNetwork``), ``PollService``,
///   ``LifecycleService``.
/// - The guest SDK is in Guests/sdk: a C header and an Embedded Swift module.
public enum HVParavirt {}
