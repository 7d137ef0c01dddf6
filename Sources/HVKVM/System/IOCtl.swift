import CKVM
import Glibc
import SystemPackage

/// The one funnel for KVM ioctls: retries EINTR and turns failures into ``KVMError``.
/// (KVM_RUN does not go through here: for it EINTR is a result, not a nuisance.)
@inline(__always)
func retryingInterrupts(_ name: StaticString, _ call: () -> Int32) throws(KVMError) -> Int32 {
    while true {
        let result = call()
        if result >= 0 { return result }
        let error = errno
        if error == EINTR { continue }
        throw .ioctl(name.description, Errno(rawValue: error))
    }
}

/// An ioctl whose argument is a pointer.
@inline(__always)
@discardableResult
func kvmIoctl(
    _ fd: FileDescriptor, _ request: UInt, _ argument: UnsafeMutableRawPointer?, _ name: StaticString
) throws(KVMError) -> Int32 {
    try retryingInterrupts(name) { unsafe ckvm_ioctl_pointer(fd.rawValue, request, argument) }
}

/// An ioctl whose argument is a plain integer.
@inline(__always)
@discardableResult
func kvmIoctl(_ fd: FileDescriptor, _ request: UInt, value: UInt, _ name: StaticString) throws(KVMError) -> Int32 {
    try retryingInterrupts(name) { ckvm_ioctl_value(fd.rawValue, request, value) }
}

/// An ioctl whose argument is a C struct passed by pointer.
@inline(__always)
@discardableResult
func kvmIoctl<T>(_ fd: FileDescriptor, _ request: UInt, _ argument: inout T, _ name: StaticString) throws(KVMError) -> Int32 {
    // SAFETY: the pointer is valid for the duration of the call and T is the struct the
    // request expects (each call site pairs them).
    unsafe try withUnsafeMutablePointer(to: &argument) { (pointer) throws(KVMError) in
        unsafe try kvmIoctl(fd, request, UnsafeMutableRawPointer(pointer), name)
    }
}

extension FileDescriptor {
    /// Closes the descriptor, ignoring errors: used from deinit, where nothing can be done.
    func closeQuietly() { _ = Glibc.close(rawValue) }
}
