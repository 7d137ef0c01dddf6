/// Binary search over items sorted by non-overlapping address ranges: the index of the item
/// whose range contains `address`, or nil. Shared by guest memory (regions) and buses (devices).
@inlinable @inline(__always)
func indexOfRange<Item>(
    containing address: GuestAddress, in items: [Item], range: (Item) -> GuestAddressRange
) -> Int? {
    var low = 0
    var high = items.count - 1
    while low <= high {
        let middle = (low + high) / 2
        let candidate = range(items[middle])
        if address < candidate.start {
            high = middle - 1
        } else if address > candidate.lastAddress {
            low = middle + 1
        } else {
            return middle
        }
    }
    return nil
}
