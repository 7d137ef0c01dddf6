#ifndef CLIBAIO_SHIM_H
#define CLIBAIO_SHIM_H
// Linux native AIO (io_submit/io_getevents) from Debian's libaio-dev.
#include <libaio.h>
#endif
