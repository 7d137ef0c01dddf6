import CVirtioHeaders
@testable import HVDevices
import HVDevicesTesting
import Testing

/// HVDevices spells the virtio ABI out in Swift; these tests hold it to the kernel's own
/// headers (linux-libc-dev), so a typo in an offset or a bit number cannot hide.
@Suite("virtio definitions agree with linux/virtio_*.h")
struct KernelHeaderAgreementTests {
    @Test func mmioRegisterOffsets() {
        let expected: [(MMIORegister, Int32)] = [
            (.magicValue, VIRTIO_MMIO_MAGIC_VALUE), (.version, VIRTIO_MMIO_VERSION),
            (.deviceID, VIRTIO_MMIO_DEVICE_ID), (.vendorID, VIRTIO_MMIO_VENDOR_ID),
            (.deviceFeatures, VIRTIO_MMIO_DEVICE_FEATURES), (.deviceFeaturesSelect, VIRTIO_MMIO_DEVICE_FEATURES_SEL),
            (.driverFeatures, VIRTIO_MMIO_DRIVER_FEATURES), (.driverFeaturesSelect, VIRTIO_MMIO_DRIVER_FEATURES_SEL),
            (.queueSelect, VIRTIO_MMIO_QUEUE_SEL), (.queueSizeMax, VIRTIO_MMIO_QUEUE_NUM_MAX),
            (.queueSize, VIRTIO_MMIO_QUEUE_NUM), (.queueReady, VIRTIO_MMIO_QUEUE_READY),
            (.queueNotify, VIRTIO_MMIO_QUEUE_NOTIFY), (.interruptStatus, VIRTIO_MMIO_INTERRUPT_STATUS),
            (.interruptAcknowledge, VIRTIO_MMIO_INTERRUPT_ACK), (.status, VIRTIO_MMIO_STATUS),
            (.queueDescriptorLow, VIRTIO_MMIO_QUEUE_DESC_LOW), (.queueDescriptorHigh, VIRTIO_MMIO_QUEUE_DESC_HIGH),
            (.queueDriverLow, VIRTIO_MMIO_QUEUE_AVAIL_LOW), (.queueDriverHigh, VIRTIO_MMIO_QUEUE_AVAIL_HIGH),
            (.queueDeviceLow, VIRTIO_MMIO_QUEUE_USED_LOW), (.queueDeviceHigh, VIRTIO_MMIO_QUEUE_USED_HIGH),
            (.sharedMemorySelect, VIRTIO_MMIO_SHM_SEL), (.sharedMemoryLengthLow, VIRTIO_MMIO_SHM_LEN_LOW),
            (.sharedMemoryLengthHigh, VIRTIO_MMIO_SHM_LEN_HIGH), (.sharedMemoryBaseLow, VIRTIO_MMIO_SHM_BASE_LOW),
            (.sharedMemoryBaseHigh, VIRTIO_MMIO_SHM_BASE_HIGH), (.configGeneration, VIRTIO_MMIO_CONFIG_GENERATION),
        ]
        for (register, offset) in expected {
            #expect(register.rawValue == UInt64(offset), "\(register)")
        }
        #expect(MMIORegister.configurationOffset == UInt64(VIRTIO_MMIO_CONFIG))
        #expect(VirtioInterrupt.Status.usedBuffer.rawValue == UInt32(VIRTIO_MMIO_INT_VRING))
        #expect(VirtioInterrupt.Status.configurationChange.rawValue == UInt32(VIRTIO_MMIO_INT_CONFIG))
    }

    @Test func featureBits() {
        let expected: [(VirtioFeatures, Int32)] = [
            (.version1, VIRTIO_F_VERSION_1), (.accessPlatform, VIRTIO_F_ACCESS_PLATFORM),
            (.ringPacked, VIRTIO_F_RING_PACKED), (.indirectDescriptors, VIRTIO_RING_F_INDIRECT_DESC),
            (.eventIndex, VIRTIO_RING_F_EVENT_IDX),
            (.blockSegmentMax, VIRTIO_BLK_F_SEG_MAX), (.blockReadOnly, VIRTIO_BLK_F_RO),
            (.blockSize, VIRTIO_BLK_F_BLK_SIZE), (.blockFlush, VIRTIO_BLK_F_FLUSH),
            (.blockDiscard, VIRTIO_BLK_F_DISCARD), (.blockWriteZeroes, VIRTIO_BLK_F_WRITE_ZEROES),
            (.consoleSize, VIRTIO_CONSOLE_F_SIZE), (.consoleEmergencyWrite, VIRTIO_CONSOLE_F_EMERG_WRITE),
            (.netChecksum, VIRTIO_NET_F_CSUM), (.netGuestChecksum, VIRTIO_NET_F_GUEST_CSUM), (.netMTU, VIRTIO_NET_F_MTU),
            (.netMAC, VIRTIO_NET_F_MAC), (.netGuestTSO4, VIRTIO_NET_F_GUEST_TSO4), (.netGuestTSO6, VIRTIO_NET_F_GUEST_TSO6),
            (.netGuestECN, VIRTIO_NET_F_GUEST_ECN), (.netGuestUFO, VIRTIO_NET_F_GUEST_UFO), (.netHostTSO4, VIRTIO_NET_F_HOST_TSO4),
            (.netHostTSO6, VIRTIO_NET_F_HOST_TSO6), (.netHostECN, VIRTIO_NET_F_HOST_ECN), (.netHostUFO, VIRTIO_NET_F_HOST_UFO),
            (.netMergeableReceiveBuffers, VIRTIO_NET_F_MRG_RXBUF), (.netStatus, VIRTIO_NET_F_STATUS),
        ]
        for (feature, bit) in expected {
            #expect(feature == .bit(Int(bit)), "\(feature) is bit \(bit)")
        }
    }

    @Test func statusBitsAndDeviceIDs() {
        #expect(DeviceStatus.acknowledge.rawValue == UInt8(VIRTIO_CONFIG_S_ACKNOWLEDGE))
        #expect(DeviceStatus.driver.rawValue == UInt8(VIRTIO_CONFIG_S_DRIVER))
        #expect(DeviceStatus.driverOK.rawValue == UInt8(VIRTIO_CONFIG_S_DRIVER_OK))
        #expect(DeviceStatus.featuresOK.rawValue == UInt8(VIRTIO_CONFIG_S_FEATURES_OK))
        #expect(DeviceStatus.needsReset.rawValue == UInt8(VIRTIO_CONFIG_S_NEEDS_RESET))
        #expect(DeviceStatus.failed.rawValue == UInt8(VIRTIO_CONFIG_S_FAILED))
        #expect(VirtioDeviceType.network.rawValue == UInt32(VIRTIO_ID_NET))
        #expect(VirtioDeviceType.block.rawValue == UInt32(VIRTIO_ID_BLOCK))
        #expect(VirtioDeviceType.console.rawValue == UInt32(VIRTIO_ID_CONSOLE))
        #expect(VirtioDeviceType.entropy.rawValue == UInt32(VIRTIO_ID_RNG))
        #expect(VirtioDeviceType.vsock.rawValue == UInt32(VIRTIO_ID_VSOCK))
    }

    @Test func ringLayout() {
        #expect(UInt64(CV_VRING_DESC_SIZE) == Descriptor.size)
        #expect(MemoryLayout<Descriptor>.size == Int(CV_VRING_DESC_SIZE))
        #expect(MemoryLayout<Descriptor>.offset(of: \.length) == Int(CV_VRING_DESC_LEN))
        #expect(MemoryLayout<Descriptor>.offset(of: \.flags) == Int(CV_VRING_DESC_FLAGS))
        #expect(MemoryLayout<Descriptor>.offset(of: \.next) == Int(CV_VRING_DESC_NEXT))
        #expect(Descriptor.Flags.next.rawValue == UInt16(VRING_DESC_F_NEXT))
        #expect(Descriptor.Flags.write.rawValue == UInt16(VRING_DESC_F_WRITE))
        #expect(Descriptor.Flags.indirect.rawValue == UInt16(VRING_DESC_F_INDIRECT))
        #expect(SplitRingLayout.availableNoInterrupt == UInt16(VRING_AVAIL_F_NO_INTERRUPT))
        #expect(SplitRingLayout.usedNoNotify == UInt16(VRING_USED_F_NO_NOTIFY))
    }

    @Test func blockRequestsAndConfiguration() {
        #expect(BlockRequestType.read.rawValue == UInt32(VIRTIO_BLK_T_IN))
        #expect(BlockRequestType.write.rawValue == UInt32(VIRTIO_BLK_T_OUT))
        #expect(BlockRequestType.flush.rawValue == UInt32(VIRTIO_BLK_T_FLUSH))
        #expect(BlockRequestType.getID.rawValue == UInt32(VIRTIO_BLK_T_GET_ID))
        #expect(BlockRequestType.discard.rawValue == UInt32(VIRTIO_BLK_T_DISCARD))
        #expect(BlockRequestType.writeZeroes.rawValue == UInt32(VIRTIO_BLK_T_WRITE_ZEROES))
        #expect(BlockStatus.ok.rawValue == UInt8(VIRTIO_BLK_S_OK))
        #expect(BlockStatus.ioError.rawValue == UInt8(VIRTIO_BLK_S_IOERR))
        #expect(BlockStatus.unsupported.rawValue == UInt8(VIRTIO_BLK_S_UNSUPP))
        #expect(BlockRequestParser.headerSize == UInt64(CV_BLK_OUTHDR_SIZE))
        #expect(BlockRequestParser.discardSegmentSize == UInt64(CV_BLK_DISCARD_SEGMENT_SIZE))
        #expect(BlockRequestParser.identifierLength == Int(VIRTIO_BLK_ID_BYTES))

        let bytes = BlockConfiguration(capacitySectors: 0x1122_3344_5566_7788, segmentMax: 0xAABB_CCDD).bytes
        // The space ends where the secure-erase fields begin: HVKit does not offer
        // VIRTIO_BLK_F_SECURE_ERASE, so a driver never reads them.
        #expect(bytes.count == Int(CV_BLK_MAX_SECURE_ERASE_SECTORS))
        #expect(bytes.count < Int(CV_BLK_CONFIG_SIZE))
        func field(_ offset: UInt, _ width: Int) -> UInt64 {
            (0..<width).reduce(0) { $0 | UInt64(bytes[Int(offset) + $1]) << (8 * UInt64($1)) }
        }
        #expect(field(CV_BLK_CAPACITY, 8) == 0x1122_3344_5566_7788)
        #expect(field(CV_BLK_SEG_MAX, 4) == 0xAABB_CCDD)
        #expect(field(CV_BLK_BLK_SIZE, 4) == 512)
        #expect(field(CV_BLK_NUM_QUEUES, 2) == 1)
        #expect(field(CV_BLK_MAX_DISCARD_SEG, 4) == 1)
        #expect(field(CV_BLK_DISCARD_ALIGNMENT, 4) == 1)
        #expect(field(CV_BLK_MAX_DISCARD_SECTORS, 4) == UInt64(BlockRequestParser.maximumZeroingSectors))
        #expect(field(CV_BLK_MAX_WRITE_ZEROES_SECTORS, 4) == UInt64(BlockRequestParser.maximumZeroingSectors))
        #expect(field(CV_BLK_MAX_WRITE_ZEROES_SEG, 4) == 1)
        #expect(field(CV_BLK_WRITE_ZEROES_MAY_UNMAP, 1) == 1)
    }

    @Test func consoleConfiguration() {
        let console = ConsoleDevice(output: CollectingSink())
        #expect(console.configuration.count == Int(CV_CONSOLE_CONFIG_SIZE))
        #expect(ConsoleDevice.emergencyWriteOffset == Int(CV_CONSOLE_EMERG_WR))
    }

    /// Each field of VsockHeader's bytes lands at the kernel's offset: a header whose every
    /// field holds a distinct byte pattern, read back at the C offsets.
    @Test func vsockHeaderLayoutAndConstants() {
        #expect(VsockHeader.size == Int(CV_VSOCK_HDR_SIZE))
        let header = VsockHeader(from: (0x0101_0101_0101_0101, 0x0303_0303), to: (0x0202_0202_0202_0202, 0x0404_0404),
                                 operation: .shutdown, length: 0x0505_0505, flags: 0x0707_0707,
                                 bufferAllocation: 0x0808_0808, forwardCount: 0x0909_0909)
        let bytes = header.bytes
        #expect(bytes[Int(CV_VSOCK_HDR_DST_CID)] == 0x02 && bytes[Int(CV_VSOCK_HDR_SRC_PORT)] == 0x03)
        #expect(bytes[Int(CV_VSOCK_HDR_DST_PORT)] == 0x04 && bytes[Int(CV_VSOCK_HDR_LEN)] == 0x05)
        #expect(bytes[Int(CV_VSOCK_HDR_TYPE)] == UInt8(VIRTIO_VSOCK_TYPE_STREAM.rawValue) && bytes[Int(CV_VSOCK_HDR_OP)] == 4)
        #expect(bytes[Int(CV_VSOCK_HDR_FLAGS)] == 0x07 && bytes[Int(CV_VSOCK_HDR_BUF_ALLOC)] == 0x08)
        #expect(bytes[Int(CV_VSOCK_HDR_FWD_CNT)] == 0x09)
        #expect(VsockHeader.Operation.request.rawValue == UInt16(VIRTIO_VSOCK_OP_REQUEST.rawValue))
        #expect(VsockHeader.Operation.creditRequest.rawValue == UInt16(VIRTIO_VSOCK_OP_CREDIT_REQUEST.rawValue))
        #expect(VsockHeader.Operation.reset.rawValue == UInt16(VIRTIO_VSOCK_OP_RST.rawValue))
        #expect(VsockHeader.ShutdownFlags.receive.rawValue == VIRTIO_VSOCK_SHUTDOWN_RCV.rawValue)
        #expect(VsockHeader.ShutdownFlags.send.rawValue == VIRTIO_VSOCK_SHUTDOWN_SEND.rawValue)
    }

    @Test func netHeaderConfigurationAndTapOffloads() {
        #expect(NetHeader.size == Int(CV_NET_HDR_V1_SIZE))
        #expect(CV_NET_HDR_NUM_BUFFERS == 10 && CV_NET_HDR_CSUM_START == 6 && CV_NET_HDR_GSO_SIZE == 4)
        #expect(NetHeader.needsChecksum == UInt8(VIRTIO_NET_HDR_F_NEEDS_CSUM))
        #expect(NetHeader.dataValid == UInt8(VIRTIO_NET_HDR_F_DATA_VALID))
        #expect(NetHeader.Segmentation.tcpIPv4.rawValue == UInt8(VIRTIO_NET_HDR_GSO_TCPV4))
        #expect(NetHeader.Segmentation.tcpIPv6.rawValue == UInt8(VIRTIO_NET_HDR_GSO_TCPV6))
        #expect(NetHeader.Segmentation.udp.rawValue == UInt8(VIRTIO_NET_HDR_GSO_UDP))
        #expect(NetHeader.segmentationECN == UInt8(VIRTIO_NET_HDR_GSO_ECN))
        #expect((CV_NET_CONFIG_STATUS, CV_NET_CONFIG_MAX_PAIRS, CV_NET_CONFIG_MTU, CV_NET_CONFIG_SPEED, CV_NET_CONFIG_DUPLEX)
            == (6, 8, 10, 12, 16))
        #expect(NetConfiguration.linkUp == UInt16(VIRTIO_NET_S_LINK_UP))
        #expect(TapOffloads.checksum.rawValue == UInt32(TUN_F_CSUM) && TapOffloads.tso4.rawValue == UInt32(TUN_F_TSO4)
            && TapOffloads.tso6.rawValue == UInt32(TUN_F_TSO6) && TapOffloads.tsoECN.rawValue == UInt32(TUN_F_TSO_ECN)
            && TapOffloads.ufo.rawValue == UInt32(TUN_F_UFO))
    }
}
