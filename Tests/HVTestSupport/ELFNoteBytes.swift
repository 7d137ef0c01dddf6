/// One ELF note as a file holds it: n_namesz, n_descsz, n_type, then the name (with its NUL)
/// and the descriptor, each padded to `alignment`. The sizes can be given to make a lying note.
public func elfNote(name: String, type: UInt32, descriptor: [UInt8], alignment: Int = 4,
                    nameSize: UInt32? = nil, descriptorSize: UInt32? = nil) -> [UInt8] {
    func word(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    func padded(_ bytes: [UInt8]) -> [UInt8] { bytes + [UInt8](repeating: 0, count: (alignment - bytes.count % alignment) % alignment) }
    let nameBytes = Array(name.utf8) + [0]
    return word(nameSize ?? UInt32(nameBytes.count)) + word(descriptorSize ?? UInt32(descriptor.count)) + word(type)
        + padded(nameBytes) + padded(descriptor)
}
