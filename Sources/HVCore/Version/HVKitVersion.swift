/// HVKit's version, as snapshots record the HVKit that wrote them (``SnapshotArchive/producer``).
/// Raised with each release; a snapshot's format has its own version
/// (``SnapshotArchive/currentVersion``), which is what decides whether a snapshot can be read.
public enum HVKitVersion {
    /// The version, "MAJOR.MINOR.PATCH" with a pre-release suffix between releases.
    public static let current = "0.9.0-dev"
}
