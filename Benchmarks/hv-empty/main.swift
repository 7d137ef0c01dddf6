// hv-empty: a Swift program that does nothing. hv-bench spawns it (built like minivmm, release
// with the Swift runtime linked in) as the floor of compose_to_first_run: what starting any
// Swift executable costs on this machine.
