import CHVKitGuestABI
@testable import HVParavirt
import Testing

/// The guest SDK's C header (Guests/sdk/include/hvkit_guest.h) and HVParavirt's definitions
/// are written by hand in two languages; these tests keep them in agreement.
@Suite struct ABIHeaderTests {
    @Test func versionAndDoorbells() {
        #expect(UInt32(HV_ABI_VERSION) == HypercallABI.version)
        #expect(UInt32(HV_ABI_VERSION_MAJOR) == HypercallABI.majorVersion)
        #expect(UInt32(HV_ABI_VERSION_MINOR) == HypercallABI.minorVersion)
        #expect(UInt16(HV_DOORBELL_PORT) == HypercallABI.doorbellPort)
        #expect(UInt64(HV_DOORBELL_MMIO_DEFAULT) == HypercallABI.defaultMMIODoorbell.rawValue)
    }

    @Test func hypercallNumbers() {
        let pairs: [(Int32, HypercallNumber)] = [
            (HV_CALL_INFO, .info), (HV_CALL_CONSOLE_WRITE, .consoleWrite), (HV_CALL_CLOCK_MONOTONIC, .clockMonotonic),
            (HV_CALL_CLOCK_WALL, .clockWall), (HV_CALL_RANDOM, .random), (HV_CALL_BLOCK_READ, .blockRead),
            (HV_CALL_BLOCK_WRITE, .blockWrite), (HV_CALL_BLOCK_FLUSH, .blockFlush), (HV_CALL_NET_SEND, .netSend),
            (HV_CALL_NET_RECEIVE, .netReceive), (HV_CALL_POLL, .poll), (HV_CALL_EXIT, .exit), (HV_CALL_ABORT, .abort),
            (HV_CALL_CHANNEL_SETUP, .channelSetup), (HV_CALL_CHANNEL_NOTIFY, .channelNotify), (HV_CALL_NULL, .null),
            (HV_CALL_USER_BASE, .userBase),
        ]
        for (header, host) in pairs { #expect(UInt32(header) == host.rawValue, "\(host)") }
        // Every built-in has a name, and the header defines every built-in.
        #expect(HypercallNumber.builtinNames.count == pairs.count - 1)
    }

    @Test func errorCodes() {
        let pairs: [(Int32, HypercallErrno)] = [
            (HV_EIO, .io), (HV_E2BIG, .tooBig), (HV_EAGAIN, .again), (HV_EFAULT, .fault), (HV_EINVAL, .invalid),
            (HV_EROFS, .readOnly), (HV_ERANGE, .outOfRange), (HV_ENOSYS, .notImplemented), (HV_EPROTO, .protocolError),
            (HV_EMSGSIZE, .messageSize),
        ]
        for (header, host) in pairs { #expect(Int64(header) == host.rawValue, "\(host)") }
        #expect(pairs.count == HypercallErrno.allCases.count)
    }

    @Test func featuresAndPollBits() {
        let pairs: [(UInt64, ParavirtFeatures)] = [
            (UInt64(HV_FEATURE_CONSOLE), .console), (UInt64(HV_FEATURE_CLOCK), .clock), (UInt64(HV_FEATURE_RANDOM), .random),
            (UInt64(HV_FEATURE_BLOCK), .block), (UInt64(HV_FEATURE_BLOCK_READONLY), .blockReadOnly), (UInt64(HV_FEATURE_NET), .net),
            (UInt64(HV_FEATURE_POLL), .poll), (UInt64(HV_FEATURE_CHANNEL), .channel),
            (UInt64(HV_FEATURE_MMIO_DOORBELL), .mmioDoorbell), (UInt64(HV_FEATURE_VMCALL), .vmcall),
        ]
        for (header, host) in pairs { #expect(header == host.rawValue) }
        #expect(UInt64(HV_POLL_NET_RECEIVE) == PollEvents.netReceive.rawValue)
    }

    @Test func limits() {
        #expect(Int(HV_MAX_SMALL_TRANSFER) == HypercallABI.maximumSmallTransfer)
        #expect(Int(HV_MAX_BLOCK_TRANSFER) == HypercallABI.maximumBlockTransfer)
        #expect(Int(HV_BLOCK_SECTOR_SIZE) == HypercallABI.blockSectorSize)
        #expect(UInt64(HV_MAX_POLL_NS) == HypercallABI.maximumPollNanoseconds)
        #expect(UInt32(HV_CHANNEL_MAX_SLOTS) == ChannelLayout.maximumSlots)
        #expect(UInt64(HV_CHANNEL_ALIGNMENT) == ChannelLayout.alignment)
        #expect(Int(HV_CHANNEL_ARGUMENTS) == ChannelLayout.Slot.argumentCount)
    }

    @Test func infoLayout() {
        #expect(MemoryLayout<hv_info>.size == ParavirtInfo.size)
        #expect(MemoryLayout<hv_info>.offset(of: \.abi_version) == ParavirtInfo.Offset.abiVersion)
        #expect(MemoryLayout<hv_info>.offset(of: \.sector_size) == ParavirtInfo.Offset.sectorSize)
        #expect(MemoryLayout<hv_info>.offset(of: \.features) == ParavirtInfo.Offset.features)
        #expect(MemoryLayout<hv_info>.offset(of: \.memory_size) == ParavirtInfo.Offset.memorySize)
        #expect(MemoryLayout<hv_info>.offset(of: \.block_capacity) == ParavirtInfo.Offset.blockCapacity)
        #expect(MemoryLayout<hv_info>.offset(of: \.mac) == ParavirtInfo.Offset.mac)
        #expect(MemoryLayout<hv_info>.offset(of: \.mtu) == ParavirtInfo.Offset.mtu)
        #expect(MemoryLayout<hv_info>.offset(of: \.max_transfer) == ParavirtInfo.Offset.maximumTransfer)
        #expect(MemoryLayout<hv_info>.offset(of: \.max_small_transfer) == ParavirtInfo.Offset.maximumSmallTransfer)
        #expect(MemoryLayout<hv_info>.offset(of: \.reserved) == ParavirtInfo.Offset.reserved)
    }

    @Test func encodedInfoDecodesAsTheHeaderStruct() {
        var info = ParavirtInfo()
        info.features = [.console, .block]
        info.memorySize = 0x1234_5678_9000
        info.sectorSize = 512
        info.blockCapacity = 1 << 30
        info.mac = [1, 2, 3, 4, 5, 6]
        info.mtu = 1500
        let decoded = info.encoded.withUnsafeBytes { $0.loadUnaligned(as: hv_info.self) }
        #expect(decoded.abi_version == HypercallABI.version)
        #expect(decoded.features == ParavirtFeatures([.console, .block]).rawValue)
        #expect(decoded.memory_size == 0x1234_5678_9000)
        #expect(decoded.sector_size == 512)
        #expect(decoded.block_capacity == 1 << 30)
        #expect([decoded.mac.0, decoded.mac.1, decoded.mac.2, decoded.mac.3, decoded.mac.4, decoded.mac.5] == [1, 2, 3, 4, 5, 6])
        #expect(decoded.mtu == 1500)
        #expect(decoded.max_transfer == UInt32(HypercallABI.maximumBlockTransfer))
        #expect(decoded.max_small_transfer == UInt32(HypercallABI.maximumSmallTransfer))
    }

    @Test func channelLayout() {
        #expect(MemoryLayout<hv_channel_header>.size == ChannelLayout.headerSize)
        #expect(MemoryLayout<hv_channel_header>.offset(of: \.request_producer) == ChannelLayout.Header.requestProducer)
        #expect(MemoryLayout<hv_channel_header>.offset(of: \.request_consumer) == ChannelLayout.Header.requestConsumer)
        #expect(MemoryLayout<hv_channel_header>.offset(of: \.response_producer) == ChannelLayout.Header.responseProducer)
        #expect(MemoryLayout<hv_channel_header>.offset(of: \.slots) == ChannelLayout.Header.slots)
        #expect(MemoryLayout<hv_channel_slot>.size == ChannelLayout.slotSize)
        #expect(MemoryLayout<hv_channel_slot>.offset(of: \.number) == ChannelLayout.Slot.number)
        #expect(MemoryLayout<hv_channel_slot>.offset(of: \.flags) == ChannelLayout.Slot.flags)
        #expect(MemoryLayout<hv_channel_slot>.offset(of: \.cookie) == ChannelLayout.Slot.cookie)
        #expect(MemoryLayout<hv_channel_slot>.offset(of: \.arguments) == ChannelLayout.Slot.arguments)
        #expect(MemoryLayout<hv_channel_slot>.offset(of: \.result) == ChannelLayout.Slot.result)
    }
}
