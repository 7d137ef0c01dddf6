/// A device, or any other part of a machine, whose state a snapshot saves and a restore puts
/// back. The machine calls ``saveState(to:)`` while the vCPUs are paused and the device has
/// nothing in flight, and ``restoreState(from:version:)`` on a device made the same way
/// (same configuration, same host resources) before any vCPU runs.
public protocol SnapshotStateful: AnyObject, Sendable {
    /// The version of the encoding ``saveState(to:)`` writes; a restore is given the version
    /// that was saved, and reads every version up to this one.
    var snapshotVersion: UInt16 { get }
    /// Writes the state.
    func saveState(to encoder: inout SnapshotEncoder)
    /// Reads back what ``saveState(to:)`` wrote (at `version`) and takes it on, refusing
    /// values the device could never have held: a snapshot file is checked, but it is still
    /// input from outside.
    func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError)
}
