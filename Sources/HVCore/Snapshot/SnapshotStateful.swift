/// A device, or any other part of a machine, whose state a snapshot saves and a restore puts
/// back. The machine calls ``saveState(to:)`` while the vCPUs are paused and the device has
/// nothing in flight, and ``restoreState(from:version:)`` on a device made the same way
/// (same configuration, same host resources) before any vCPU runs.
public protocol SnapshotStateful: AnyObject, Sendable {
    /// The version of the encoding ``saveState(to:)`` writes; a restore is given the version
    /// that was saved, and reads every version up to this one.
    var snapshotVersion: UInt16 { get }
    /// Brings the device to a state that can be saved, before ``saveState(to:)``: requests in
    /// flight finished, buffers it holds for the guest given back. Throws, naming the reason,
    /// when it cannot; the snapshot is then refused and ``snapshotFinished()`` still called.
    func prepareSnapshot() throws(SnapshotError)
    /// Writes the state.
    func saveState(to encoder: inout SnapshotEncoder)
    /// Called after the state was saved (or the snapshot failed) on the device that goes on
    /// running, to take back what ``prepareSnapshot()`` gave up.
    func snapshotFinished()
    /// Reads back what ``saveState(to:)`` wrote (at `version`) and takes it on, refusing
    /// values the device could never have held: a snapshot file is checked, but it is still
    /// input from outside.
    func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError)
}

extension SnapshotStateful {
    /// Nothing to prepare: the device is always in a state that can be saved.
    public func prepareSnapshot() throws(SnapshotError) {}
    /// Nothing to take back.
    public func snapshotFinished() {}
}
