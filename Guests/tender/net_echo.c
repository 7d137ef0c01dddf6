/* An idle unikernel: sleeps in poll until a frame arrives, sends it back, and exits when a
 * frame starts with 0xFF. Shows that a waiting guest blocks in the host instead of spinning. */
#include "hvkit_guest.h"

int hv_main(void) {
    static unsigned char frame[1514];
    for (;;) {
        int64_t ready = hv_poll(HV_MAX_POLL_NS);
        if (ready < 0) return 1;
        if (!(ready & HV_POLL_NET_RECEIVE)) continue;
        int64_t length = hv_net_receive(frame, sizeof(frame));
        if (length == -HV_EAGAIN) continue;
        if (length < 0) return 2;
        if (frame[0] == 0xFF) return 0;
        if (hv_net_send(frame, (size_t)length) != length) return 3;
    }
}
