// CVirtioHeaders: the kernel's virtio definitions (linux-libc-dev), for a test that checks
// HVDevices' Swift constants and layouts against them. Test-only; HVDevices does not use it.
#ifndef CVIRTIOHEADERS_H
#define CVIRTIOHEADERS_H

#include <stddef.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_config.h>
#include <linux/virtio_console.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_net.h>
#include <linux/if_tun.h>
#include <linux/virtio_ring.h>
#include <linux/virtio_vsock.h>

static const unsigned long CV_BLK_CONFIG_SIZE = sizeof(struct virtio_blk_config);
static const unsigned long CV_BLK_CAPACITY = offsetof(struct virtio_blk_config, capacity);
static const unsigned long CV_BLK_SEG_MAX = offsetof(struct virtio_blk_config, seg_max);
static const unsigned long CV_BLK_BLK_SIZE = offsetof(struct virtio_blk_config, blk_size);
static const unsigned long CV_BLK_NUM_QUEUES = offsetof(struct virtio_blk_config, num_queues);
static const unsigned long CV_BLK_MAX_DISCARD_SECTORS = offsetof(struct virtio_blk_config, max_discard_sectors);
static const unsigned long CV_BLK_MAX_DISCARD_SEG = offsetof(struct virtio_blk_config, max_discard_seg);
static const unsigned long CV_BLK_DISCARD_ALIGNMENT = offsetof(struct virtio_blk_config, discard_sector_alignment);
static const unsigned long CV_BLK_MAX_WRITE_ZEROES_SECTORS = offsetof(struct virtio_blk_config, max_write_zeroes_sectors);
static const unsigned long CV_BLK_MAX_WRITE_ZEROES_SEG = offsetof(struct virtio_blk_config, max_write_zeroes_seg);
static const unsigned long CV_BLK_WRITE_ZEROES_MAY_UNMAP = offsetof(struct virtio_blk_config, write_zeroes_may_unmap);
static const unsigned long CV_BLK_MAX_SECURE_ERASE_SECTORS = offsetof(struct virtio_blk_config, max_secure_erase_sectors);
static const unsigned long CV_BLK_OUTHDR_SIZE = sizeof(struct virtio_blk_outhdr);
static const unsigned long CV_BLK_DISCARD_SEGMENT_SIZE = sizeof(struct virtio_blk_discard_write_zeroes);
static const unsigned long CV_CONSOLE_CONFIG_SIZE = sizeof(struct virtio_console_config);
static const unsigned long CV_CONSOLE_EMERG_WR = offsetof(struct virtio_console_config, emerg_wr);
static const unsigned long CV_NET_HDR_V1_SIZE = sizeof(struct virtio_net_hdr_v1);
static const unsigned long CV_NET_HDR_NUM_BUFFERS = offsetof(struct virtio_net_hdr_v1, num_buffers);
static const unsigned long CV_NET_HDR_CSUM_START = offsetof(struct virtio_net_hdr_v1, csum_start);
static const unsigned long CV_NET_HDR_GSO_SIZE = offsetof(struct virtio_net_hdr_v1, gso_size);
static const unsigned long CV_NET_CONFIG_STATUS = offsetof(struct virtio_net_config, status);
static const unsigned long CV_NET_CONFIG_MAX_PAIRS = offsetof(struct virtio_net_config, max_virtqueue_pairs);
static const unsigned long CV_NET_CONFIG_MTU = offsetof(struct virtio_net_config, mtu);
static const unsigned long CV_NET_CONFIG_SPEED = offsetof(struct virtio_net_config, speed);
static const unsigned long CV_NET_CONFIG_DUPLEX = offsetof(struct virtio_net_config, duplex);
static const unsigned long CV_VSOCK_HDR_SIZE = sizeof(struct virtio_vsock_hdr);
static const unsigned long CV_VSOCK_HDR_DST_CID = offsetof(struct virtio_vsock_hdr, dst_cid);
static const unsigned long CV_VSOCK_HDR_SRC_PORT = offsetof(struct virtio_vsock_hdr, src_port);
static const unsigned long CV_VSOCK_HDR_DST_PORT = offsetof(struct virtio_vsock_hdr, dst_port);
static const unsigned long CV_VSOCK_HDR_LEN = offsetof(struct virtio_vsock_hdr, len);
static const unsigned long CV_VSOCK_HDR_TYPE = offsetof(struct virtio_vsock_hdr, type);
static const unsigned long CV_VSOCK_HDR_OP = offsetof(struct virtio_vsock_hdr, op);
static const unsigned long CV_VSOCK_HDR_FLAGS = offsetof(struct virtio_vsock_hdr, flags);
static const unsigned long CV_VSOCK_HDR_BUF_ALLOC = offsetof(struct virtio_vsock_hdr, buf_alloc);
static const unsigned long CV_VSOCK_HDR_FWD_CNT = offsetof(struct virtio_vsock_hdr, fwd_cnt);
static const unsigned long CV_VRING_DESC_SIZE = sizeof(struct vring_desc);
static const unsigned long CV_VRING_DESC_LEN = offsetof(struct vring_desc, len);
static const unsigned long CV_VRING_DESC_FLAGS = offsetof(struct vring_desc, flags);
static const unsigned long CV_VRING_DESC_NEXT = offsetof(struct vring_desc, next);

#endif
