import HVCore

/// HVParavirt: the hypercall ABI a guest uses to call the host, its dispatch, the built-in
/// paravirtual services and the guest-side SDK. It talks to the hypervisor only through
/// HVCore protocols, never through HVKVM. Its first types arrive with the paravirtualization
/// issue; the module exists now so the package's shape and import rules are fixed.
public enum HVParavirt {}
