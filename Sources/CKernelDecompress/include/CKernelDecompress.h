// CKernelDecompress: decompresses the payload of a Linux bzImage on the host, with Debian's
// zlib, liblzma, liblz4 and libzstd, so a guest can enter the extracted vmlinux directly
// instead of running the kernel's own decompressor under emulation. Each library is opened
// (dlopen) by the call that needs it, so a program that never extracts loads none of them.
#ifndef CKERNELDECOMPRESS_H
#define CKERNELDECOMPRESS_H

#include <stddef.h>
#include <stdint.h>

// Results: 0, or one of these.
#define HV_DECOMPRESS_CORRUPT   (-1)  // the stream is malformed or fails its checks
#define HV_DECOMPRESS_TOO_LARGE (-2)  // the output would exceed `capacity`
#define HV_DECOMPRESS_TRUNCATED (-3)  // the stream ends early
#define HV_DECOMPRESS_NO_MEMORY (-4)  // the library could not allocate its state
#define HV_DECOMPRESS_LIBRARY_MISSING (-5)  // the library cannot be loaded: see below

// Each reads `input` (the compressed stream, without the kernel's trailing size word) and
// writes at most `capacity` bytes to `output`, setting *written.
int hv_decompress_gzip(const uint8_t *input, size_t length, uint8_t *output, size_t capacity, size_t *written);
int hv_decompress_xz(const uint8_t *input, size_t length, uint8_t *output, size_t capacity, size_t *written);
// The LZ4 legacy frame format (magic 0x184C2102) the kernel's build uses.
int hv_decompress_lz4_legacy(const uint8_t *input, size_t length, uint8_t *output, size_t capacity, size_t *written);
int hv_decompress_zstd(const uint8_t *input, size_t length, uint8_t *output, size_t capacity, size_t *written);

// After HV_DECOMPRESS_LIBRARY_MISSING on this thread: why (dlopen's message, or the symbol
// that is missing).
const char *hv_decompress_missing_library(void);

#endif
