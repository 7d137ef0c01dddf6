// `import HVMachine` is all a VMM needs: the modules it composes come with it, and so do
// swift-system's Errno, FilePath and FileDescriptor, which HVKit's APIs take and throw, so a
// downstream package does not have to depend on swift-system itself.
@_exported import HVBoot
@_exported import HVCore
@_exported import HVDevices
@_exported import HVKVM
@_exported import HVParavirt
@_exported import SystemPackage
