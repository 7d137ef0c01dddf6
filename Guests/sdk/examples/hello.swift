// The smallest Embedded Swift guest: says hello on HVKit's console and exits with its argument.
//   Guests/sdk/build-guest.sh hello.swift -o hello.elf
import HVKitGuest

@_cdecl("hv_main")
public func main(_ argument: UInt64) -> Int32 {
    print("hello from an Embedded Swift guest")
    return Int32(truncatingIfNeeded: argument)
}
