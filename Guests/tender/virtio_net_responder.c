/* A tiny network host on virtio-net over virtio-mmio, with its own driver: answers ARP for its
 * address, ICMP echo requests and UDP datagrams to port 7 (echo), and exits when a datagram
 * reaches port 9. The host's tests ping it and echo UDP through a tap.
 *
 * hv_main's argument: bits 0-31 the IPv4 address (first byte lowest), bits 32-63 the device's
 * MMIO base >> 12. Interrupts stay off: the driver polls the used rings. Only VERSION_1 is
 * negotiated (no MRG_RXBUF, no offloads), so every receive buffer holds one whole frame behind
 * the 12-byte header. */
#define QUEUE_SIZE 16
#include "virtio_mmio.h"

#define BUFFER_SIZE 1536
#define HEADER_SIZE 12

static struct queue receive_queue, transmit_queue;
static uint8_t receive_buffers[QUEUE_SIZE][BUFFER_SIZE] __attribute__((aligned(64)));
static uint8_t transmit_buffers[QUEUE_SIZE][BUFFER_SIZE] __attribute__((aligned(64)));
static uint8_t our_mac[6];
static uint8_t our_ip[4];

static void copy(void *to, const void *from, unsigned length) {
    uint8_t *d = to;
    const uint8_t *s = from;
    while (length--) *d++ = *s++;
}

static int equal(const uint8_t *a, const uint8_t *b, unsigned length) {
    while (length--) if (*a++ != *b++) return 0;
    return 1;
}

static uint16_t checksum(const uint8_t *bytes, unsigned length) {
    uint32_t sum = 0;
    for (unsigned i = 0; i + 1 < length; i += 2) sum += (uint32_t)bytes[i] << 8 | bytes[i + 1];
    if (length & 1) sum += (uint32_t)bytes[length - 1] << 8;
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

/* Puts receive buffer `slot` back in the available ring. */
static void post_receive(uint16_t slot) {
    receive_queue.descriptors[slot] = (struct descriptor){
        (uint64_t)(uintptr_t)receive_buffers[slot], BUFFER_SIZE, 2 /* WRITE */, 0 };
    receive_queue.available.ring[receive_queue.available.index % QUEUE_SIZE] = slot;
    barrier();
    receive_queue.available.index++;
    barrier();
}

static uint16_t transmitted;

/* Sends `length` bytes of transmit buffer `slot` (header included), waiting for the device
 * to finish the one sent QUEUE_SIZE frames ago. */
static void transmit(uint16_t slot, unsigned length) {
    transmit_queue.descriptors[slot] = (struct descriptor){
        (uint64_t)(uintptr_t)transmit_buffers[slot], length, 0, 0 };
    transmit_queue.available.ring[transmit_queue.available.index % QUEUE_SIZE] = slot;
    barrier();
    transmit_queue.available.index++;
    barrier();
    write32(0x50, 1);                            /* QueueNotify: the transmit queue */
    transmitted++;
}

/* Builds the answer to the frame in `in` (without header), `length` bytes, into `out`
 * (without header); returns its length, 0 for none, or -1 to exit. */
static int answer(const uint8_t *in, unsigned length, uint8_t *out) {
    if (length < 42) return 0;
    uint16_t type = (uint16_t)(in[12] << 8 | in[13]);
    if (type == 0x0806) {                        /* ARP */
        if (in[20] != 0 || in[21] != 1 || !equal(in + 38, our_ip, 4)) return 0;
        copy(out, in + 6, 6);
        copy(out + 6, our_mac, 6);
        copy(out + 12, in + 12, 8);
        out[20] = 0;
        out[21] = 2;                             /* reply */
        copy(out + 22, our_mac, 6);
        copy(out + 28, our_ip, 4);
        copy(out + 32, in + 22, 10);             /* the asker's MAC and address */
        return 42;
    }
    if (type != 0x0800 || (in[14] >> 4) != 4 || !equal(in + 30, our_ip, 4)) return 0;
    unsigned header = (unsigned)(in[14] & 0x0F) * 4;
    unsigned total = (unsigned)(in[16] << 8 | in[17]);
    if (header < 20 || total < header || 14 + total > length) return 0;
    copy(out, in + 6, 6);
    copy(out + 6, our_mac, 6);
    copy(out + 12, in + 12, 14 + total - 12);
    copy(out + 26, in + 30, 4);                  /* swap the addresses: the IP checksum stays */
    copy(out + 30, in + 26, 4);
    uint8_t *payload = out + 14 + header;
    unsigned payload_length = total - header;
    if (in[23] == 1 && payload_length >= 8 && payload[0] == 8) {   /* ICMP echo request */
        payload[0] = 0;
        payload[2] = payload[3] = 0;
        uint16_t sum = checksum(payload, payload_length);
        payload[2] = (uint8_t)(sum >> 8);
        payload[3] = (uint8_t)sum;
        return (int)(14 + total);
    }
    if (in[23] == 17 && payload_length >= 8) {   /* UDP */
        const uint8_t *udp = in + 14 + header;
        uint16_t port = (uint16_t)(udp[2] << 8 | udp[3]);
        if (port == 9) return -1;
        if (port != 7) return 0;
        copy(payload, udp + 2, 2);               /* swap the ports */
        copy(payload + 2, udp, 2);
        payload[6] = payload[7] = 0;             /* no checksum (allowed over IPv4) */
        return (int)(14 + total);
    }
    return 0;
}

int hv_main(uint64_t argument) {
    mmio = (volatile uint8_t *)(uintptr_t)((argument >> 32) << 12);
    for (int i = 0; i < 4; i++) our_ip[i] = (uint8_t)(argument >> (8 * i));
    if (!is_device(1)) return 10;
    if (negotiate(1u << 5)) return 11;           /* MAC (bit 5) */
    for (int i = 0; i < 6; i++) our_mac[i] = mmio[0x100 + i];
    if (set_up_queue(0, &receive_queue) || set_up_queue(1, &transmit_queue)) return 13;
    write32(0x70, 0xF);                          /* DRIVER_OK */
    for (uint16_t slot = 0; slot < QUEUE_SIZE; slot++) post_receive(slot);
    write32(0x50, 0);                            /* QueueNotify: the receive queue */

    static const char ready[] = "virtio-net responder ready\n";
    hv_console_write(ready, sizeof(ready) - 1);
    for (;;) {
        if (*(volatile uint16_t *)&receive_queue.used.index == receive_queue.last_used) continue;
        barrier();
        struct used_element element = receive_queue.used.ring[receive_queue.last_used % QUEUE_SIZE];
        receive_queue.last_used++;
        uint16_t slot = (uint16_t)element.id;
        if (slot >= QUEUE_SIZE) return 12;
        int reply = 0;
        if (element.length > HEADER_SIZE && element.length <= BUFFER_SIZE) {
            uint16_t out = transmitted % QUEUE_SIZE;
            /* Before reusing a transmit buffer, the device must have used it. */
            while ((uint16_t)(transmitted - *(volatile uint16_t *)&transmit_queue.used.index) >= QUEUE_SIZE) {}
            reply = answer(receive_buffers[slot] + HEADER_SIZE, element.length - HEADER_SIZE,
                           transmit_buffers[out] + HEADER_SIZE);
            if (reply > 0) {
                for (int i = 0; i < HEADER_SIZE; i++) transmit_buffers[out][i] = 0;
                transmit(out, HEADER_SIZE + (unsigned)reply);
            }
        }
        post_receive(slot);
        write32(0x50, 0);
        if (reply < 0) return 0;
    }
}
