/* A tiny vsock agent on virtio-vsock over virtio-mmio, with its own driver: connects out to the
 * host's port (argument bits 0-31) and says hello, tries the next port (where nothing listens)
 * and expects RST, then listens on port 52 and echoes what each connection sends, until the
 * host stops the machine. The host's tests drive it through the device's Unix socket.
 *
 * hv_main's argument: bits 0-31 the host port, bits 32-63 the device's MMIO base >> 12.
 * Interrupts stay off: the driver polls the used rings. The echo takes no copy: each transmit
 * chain points at the receive buffer the bytes came in, which goes back to the device once
 * the echo is sent. Flow control is the specification's: the agent advertises 32 KiB (half its
 * receive buffers, so control packets always find room) and never sends beyond the host's
 * advertised credit; bytes waiting for credit keep their buffers until a header brings more. */
#define QUEUE_SIZE 32
#include "virtio_mmio.h"

#define HEADER_SIZE 44
#define DATA_SIZE 4096
#define RECEIVE_BUFFERS 16
#define OUR_BUFFER (32u << 10)
#define LISTEN_PORT 52
#define MAX_CONNECTIONS 8

enum { OP_REQUEST = 1, OP_RESPONSE = 2, OP_RST = 3, OP_SHUTDOWN = 4, OP_RW = 5, OP_CREDIT_UPDATE = 6, OP_CREDIT_REQUEST = 7 };

struct __attribute__((packed)) header {
    uint64_t source_cid, destination_cid;
    uint32_t source_port, destination_port, length;
    uint16_t type, op;
    uint32_t flags, buffer_allocation, forward_count;
};

struct connection {
    int open;
    uint32_t host_port, guest_port;
    uint32_t peer_buffer, peer_forwarded;   /* the host's credit, as last advertised */
    uint32_t sent, consumed;                /* our tx_cnt and fwd_cnt */
};

static struct queue receive_queue, transmit_queue, event_queue;
static uint8_t receive_buffers[RECEIVE_BUFFERS][HEADER_SIZE + DATA_SIZE] __attribute__((aligned(64)));
static struct header transmit_header __attribute__((aligned(64)));
static uint8_t event_buffer[8] __attribute__((aligned(8)));
static struct connection connections[MAX_CONNECTIONS];
static uint64_t our_cid;
static uint16_t transmitted;
/* Receive buffers holding data that waits for the host's credit, oldest first. */
static uint16_t waiting[RECEIVE_BUFFERS];
static unsigned waiting_count;

static void post_receive(uint16_t slot) {
    receive_queue.descriptors[slot] = (struct descriptor){
        (uint64_t)(uintptr_t)receive_buffers[slot], HEADER_SIZE + DATA_SIZE, 2 /* WRITE */, 0 };
    receive_queue.available.ring[receive_queue.available.index % QUEUE_SIZE] = slot;
    barrier();
    receive_queue.available.index++;
    barrier();
    write32(0x50, 0);                            /* QueueNotify: the receive queue */
}

/* Sends one packet: a header from `c` with `op`, and `length` bytes at `data`; waits until the
 * device has used it (so the buffers may be reused). */
static void send(struct connection *c, uint16_t op, uint32_t flags, const uint8_t *data, uint32_t length) {
    transmit_header = (struct header){ our_cid, 2, c->guest_port, c->host_port, length, 1, op, flags,
                                       OUR_BUFFER, c->consumed };
    transmit_queue.descriptors[0] = (struct descriptor){
        (uint64_t)(uintptr_t)&transmit_header, HEADER_SIZE, length ? 1 /* NEXT */ : 0, 1 };
    if (length) transmit_queue.descriptors[1] = (struct descriptor){ (uint64_t)(uintptr_t)data, length, 0, 0 };
    transmit_queue.available.ring[transmit_queue.available.index % QUEUE_SIZE] = 0;
    barrier();
    transmit_queue.available.index++;
    barrier();
    write32(0x50, 1);                            /* QueueNotify: the transmit queue */
    transmitted++;
    while (*(volatile uint16_t *)&transmit_queue.used.index != transmitted) {}
    if (op == OP_RW) c->sent += length;
}

static struct connection *find(uint32_t host_port, uint32_t guest_port) {
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (connections[i].open && connections[i].host_port == host_port && connections[i].guest_port == guest_port)
            return &connections[i];
    return 0;
}

static struct connection *open_connection(uint32_t host_port, uint32_t guest_port) {
    for (int i = 0; i < MAX_CONNECTIONS; i++)
        if (!connections[i].open) {
            connections[i] = (struct connection){ 1, host_port, guest_port, 0, 0, 0, 0 };
            return &connections[i];
        }
    return 0;
}

/* Takes the next packet the device delivered: its receive slot, or -1 if none waits. */
static int next_packet(void) {
    if (*(volatile uint16_t *)&receive_queue.used.index == receive_queue.last_used) return -1;
    barrier();
    struct used_element element = receive_queue.used.ring[receive_queue.last_used % QUEUE_SIZE];
    receive_queue.last_used++;
    if (element.id >= RECEIVE_BUFFERS || element.length < HEADER_SIZE) return -2;
    return (int)element.id;
}

/* Echoes the waiting data the host's credit allows, oldest first within each connection: a
 * connection whose host reader stopped keeps its bytes (and buffers) without holding up the
 * others. */
static void echo_waiting(void) {
    unsigned kept = 0;
    uint32_t blocked[MAX_CONNECTIONS] = {0};
    unsigned blocked_count = 0;
    for (unsigned i = 0; i < waiting_count; i++) {
        uint16_t slot = waiting[i];
        struct header *h = (struct header *)receive_buffers[slot];
        struct connection *c = find(h->source_port, h->destination_port);
        int held = 0;
        for (unsigned b = 0; b < blocked_count; b++) held |= blocked[b] == h->source_port;
        if (c && !held) {
            uint32_t credit = c->peer_buffer - (c->sent - c->peer_forwarded);
            if (h->length > credit) {
                if (blocked_count < MAX_CONNECTIONS) blocked[blocked_count++] = h->source_port;
                held = 1;
            } else {
                c->consumed += h->length;
                send(c, OP_RW, 0, receive_buffers[slot] + HEADER_SIZE, h->length);
            }
        }
        if (held) {
            waiting[kept++] = slot;
        } else {
            post_receive(slot);
        }
    }
    waiting_count = kept;
}

/* Handles the packet in receive slot `slot`. */
static void handle(uint16_t slot) {
    struct header *h = (struct header *)receive_buffers[slot];
    struct connection *c = find(h->source_port, h->destination_port);
    if (c) {
        c->peer_buffer = h->buffer_allocation;
        c->peer_forwarded = h->forward_count;
    }
    if (h->op == OP_RW && c && h->length && h->length <= DATA_SIZE) {
        waiting[waiting_count++] = slot;          /* the buffer waits with the data */
        return;
    }
    if (h->op == OP_REQUEST && !c) {
        struct connection scratch = { 1, h->source_port, h->destination_port, 0, 0, 0, 0 };
        struct connection *accepted = h->destination_port == LISTEN_PORT ? open_connection(h->source_port, h->destination_port) : 0;
        if (accepted) {
            accepted->peer_buffer = h->buffer_allocation;
            accepted->peer_forwarded = h->forward_count;
            send(accepted, OP_RESPONSE, 0, 0, 0);
        } else {
            send(&scratch, OP_RST, 0, 0, 0);     /* nothing listens there */
        }
    } else if (h->op == OP_CREDIT_REQUEST && c) {
        send(c, OP_CREDIT_UPDATE, 0, 0, 0);
    } else if (h->op == OP_SHUTDOWN && c) {
        send(c, OP_RST, 0, 0, 0);                /* done both ways: the host closed */
        c->open = 0;
    } else if (h->op == OP_RST && c) {
        c->open = 0;
    }
    post_receive(slot);
}

/* Waits for the answer to a REQUEST from `guest_port`: its op (RESPONSE or RST), serving
 * other packets meanwhile. */
static uint16_t wait_for_answer(uint32_t guest_port) {
    for (;;) {
        int slot = next_packet();
        if (slot < 0) continue;
        struct header *h = (struct header *)receive_buffers[slot];
        if (h->destination_port == guest_port && (h->op == OP_RESPONSE || h->op == OP_RST)) {
            uint16_t op = h->op;
            struct connection *c = find(h->source_port, guest_port);
            if (c) {
                c->peer_buffer = h->buffer_allocation;
                c->peer_forwarded = h->forward_count;
                if (op == OP_RST) c->open = 0;
            }
            post_receive((uint16_t)slot);
            return op;
        }
        handle((uint16_t)slot);
    }
}

static void say(const char *text) {
    unsigned length = 0;
    while (text[length]) length++;
    hv_console_write(text, length);
}

int hv_main(uint64_t argument) {
    mmio = (volatile uint8_t *)(uintptr_t)((argument >> 32) << 12);
    uint32_t host_port = (uint32_t)argument;
    if (!is_device(19)) return 10;
    if (negotiate(0)) return 11;
    our_cid = (uint64_t)read32(0x100) | (uint64_t)read32(0x104) << 32;
    if (set_up_queue(0, &receive_queue) || set_up_queue(1, &transmit_queue) || set_up_queue(2, &event_queue)) return 13;
    /* One event buffer, there before the device starts (it takes them then). */
    event_queue.descriptors[0] = (struct descriptor){ (uint64_t)(uintptr_t)event_buffer, sizeof event_buffer, 2, 0 };
    event_queue.available.ring[0] = 0;
    barrier();
    event_queue.available.index = 1;
    write32(0x70, 0xF);                          /* DRIVER_OK */
    for (uint16_t slot = 0; slot < RECEIVE_BUFFERS; slot++) post_receive(slot);

    /* Out to the host, then to a port where nothing listens. */
    struct connection *out = open_connection(host_port, 2000);
    send(out, OP_REQUEST, 0, 0, 0);
    if (wait_for_answer(2000) == OP_RESPONSE) {
        static const uint8_t hello[] = "hello from the guest\n";
        send(out, OP_RW, 0, hello, sizeof hello - 1);
        say("vsock: connected out\n");
    } else {
        out->open = 0;
        say("vsock: connecting out was refused\n");
    }
    struct connection *nowhere = open_connection(host_port + 1, 2001);
    send(nowhere, OP_REQUEST, 0, 0, 0);
    say(wait_for_answer(2001) == OP_RST ? "vsock: refused as expected\n" : "vsock: not refused\n");
    nowhere->open = 0;

    say("vsock agent ready\n");
    for (;;) {
        int slot = next_packet();
        if (slot == -2) return 12;
        if (slot >= 0) handle((uint16_t)slot);
        echo_waiting();
    }
}
