// The guest SDK's header, seen from the host so a test can compare it with HVParavirt's
// definitions (numbers, codes, struct sizes and offsets, taken from clang's own layout).
#include "../../../Guests/sdk/include/hvkit_guest.h"
