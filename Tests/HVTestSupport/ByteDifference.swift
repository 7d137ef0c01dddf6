/// How `got` differs from `expected`, in a few words; nil when they are the same. For the
/// comparisons of large buffers: `#expect(a == b)` on megabytes that differ makes Swift Testing
/// compute an edit script of the two, which takes longer than any test.
public func byteDifference(_ got: [UInt8], _ expected: [UInt8]) -> String? {
    guard got != expected else { return nil }
    let index = zip(got, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(got.count, expected.count)
    return "\(got.count) bytes against \(expected.count) expected; they differ from offset \(index)"
}
