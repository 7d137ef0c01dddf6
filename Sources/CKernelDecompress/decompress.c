#include "CKernelDecompress.h"

#include <dlfcn.h>
#include <lz4.h>
#include <lzma.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

// The libraries are opened when a kernel is extracted, not linked: a VMM that never extracts
// loads none of them (four fewer libraries for the dynamic loader at every start), and one
// without them still runs, refusing only the extraction with the library's name.

static __thread char missingLibrary[256];

const char *hv_decompress_missing_library(void) { return missingLibrary; }

// Opens `soname` and resolves `count` symbols into `slots`; on failure records why and
// returns NULL.
static void *openLibrary(const char *soname, const char *const *names, void **slots, int count) {
    void *handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        snprintf(missingLibrary, sizeof missingLibrary, "%s", dlerror());
        return NULL;
    }
    for (int index = 0; index < count; index++) {
        slots[index] = dlsym(handle, names[index]);
        if (slots[index] == NULL) {
            snprintf(missingLibrary, sizeof missingLibrary, "%s has no %s", soname, names[index]);
            dlclose(handle);
            return NULL;
        }
    }
    return handle;
}

int hv_decompress_gzip(const uint8_t *input, size_t length, uint8_t *output, size_t capacity, size_t *written) {
    *written = 0;
    static const char *const names[] = { "inflateInit2_", "inflate", "inflateEnd" };
    union {
        void *slots[3];
        struct {
            int (*inflateInit2_)(z_streamp, int, const char *, int);
            int (*inflate)(z_streamp, int);
            int (*inflateEnd)(z_streamp);
        } call;
    } zlib;
    void *library = openLibrary("libz.so.1", names, zlib.slots, 3);
    if (library == NULL) return HV_DECOMPRESS_LIBRARY_MISSING;
    z_stream stream;
    memset(&stream, 0, sizeof stream);
    // 16 + MAX_WBITS: a gzip header and trailer, not zlib's. (inflateInit2 is a macro for
    // this call, with the header's version and structure size.)
    if (zlib.call.inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, (int)sizeof stream) != Z_OK) {
        dlclose(library);
        return HV_DECOMPRESS_NO_MEMORY;
    }
    int result = 0;
    size_t consumed = 0, produced = 0;
    for (;;) {
        // zlib counts in uInt: feed at most 1 GiB at a time.
        size_t inChunk = length - consumed > (1u << 30) ? (1u << 30) : length - consumed;
        size_t outChunk = capacity - produced > (1u << 30) ? (1u << 30) : capacity - produced;
        stream.next_in = (Bytef *)(input + consumed);
        stream.avail_in = (uInt)inChunk;
        stream.next_out = output + produced;
        stream.avail_out = (uInt)outChunk;
        int status = zlib.call.inflate(&stream, Z_NO_FLUSH);
        consumed += inChunk - stream.avail_in;
        produced += outChunk - stream.avail_out;
        if (status == Z_STREAM_END) break;
        if (status == Z_BUF_ERROR) {
            result = produced == capacity ? HV_DECOMPRESS_TOO_LARGE : HV_DECOMPRESS_TRUNCATED;
            break;
        }
        if (status != Z_OK) { result = status == Z_MEM_ERROR ? HV_DECOMPRESS_NO_MEMORY : HV_DECOMPRESS_CORRUPT; break; }
        if (produced == capacity) { result = HV_DECOMPRESS_TOO_LARGE; break; }
        if (consumed == length && stream.avail_in == 0 && inChunk == 0) { result = HV_DECOMPRESS_TRUNCATED; break; }
    }
    zlib.call.inflateEnd(&stream);
    dlclose(library);
    *written = produced;
    return result;
}

int hv_decompress_xz(const uint8_t *input, size_t length, uint8_t *output, size_t capacity, size_t *written) {
    *written = 0;
    static const char *const names[] = { "lzma_stream_buffer_decode" };
    union {
        void *slots[1];
        struct {
            lzma_ret (*streamBufferDecode)(uint64_t *, uint32_t, const lzma_allocator *, const uint8_t *, size_t *, size_t,
                                           uint8_t *, size_t *, size_t);
        } call;
    } lzma;
    void *library = openLibrary("liblzma.so.5", names, lzma.slots, 1);
    if (library == NULL) return HV_DECOMPRESS_LIBRARY_MISSING;
    uint64_t memoryLimit = UINT64_MAX;
    size_t inPosition = 0, outPosition = 0;
    // One call over the whole buffer; the kernel's xz streams use CRC32 and one block.
    lzma_ret status = lzma.call.streamBufferDecode(&memoryLimit, 0, NULL, input, &inPosition, length,
                                                   output, &outPosition, capacity);
    dlclose(library);
    *written = outPosition;
    switch (status) {
    case LZMA_OK: return 0;
    case LZMA_BUF_ERROR: return outPosition == capacity ? HV_DECOMPRESS_TOO_LARGE : HV_DECOMPRESS_TRUNCATED;
    case LZMA_MEM_ERROR: return HV_DECOMPRESS_NO_MEMORY;
    default: return HV_DECOMPRESS_CORRUPT;
    }
}

int hv_decompress_lz4_legacy(const uint8_t *input, size_t length, uint8_t *output, size_t capacity, size_t *written) {
    *written = 0;
    static const char *const names[] = { "LZ4_decompress_safe" };
    union {
        void *slots[1];
        struct { int (*decompressSafe)(const char *, char *, int, int); } call;
    } lz4;
    void *library = openLibrary("liblz4.so.1", names, lz4.slots, 1);
    if (library == NULL) return HV_DECOMPRESS_LIBRARY_MISSING;
    int result = 0;
    const uint32_t magic = 0x184C2102;
    size_t position = 0, produced = 0;
    // Legacy blocks decompress to at most 8 MiB each.
    const size_t blockMaximum = 8u << 20;
    for (;;) {
        if (position == length) break;
        if (length - position < 4) { result = HV_DECOMPRESS_TRUNCATED; break; }
        uint32_t word = (uint32_t)input[position] | (uint32_t)input[position + 1] << 8
            | (uint32_t)input[position + 2] << 16 | (uint32_t)input[position + 3] << 24;
        position += 4;
        if (word == magic) continue;  // the start of a (further) frame
        if (word == 0 || word > LZ4_COMPRESSBOUND(blockMaximum)) { result = HV_DECOMPRESS_CORRUPT; break; }
        if (length - position < word) { result = HV_DECOMPRESS_TRUNCATED; break; }
        size_t room = capacity - produced;
        int limit = room > blockMaximum ? (int)blockMaximum : (int)room;
        int count = lz4.call.decompressSafe((const char *)input + position, (char *)output + produced, (int)word, limit);
        if (count < 0) { result = room < blockMaximum ? HV_DECOMPRESS_TOO_LARGE : HV_DECOMPRESS_CORRUPT; break; }
        produced += (size_t)count;
        position += word;
        *written = produced;
    }
    dlclose(library);
    return result;
}

int hv_decompress_zstd(const uint8_t *input, size_t length, uint8_t *output, size_t capacity, size_t *written) {
    *written = 0;
    static const char *const names[] = { "ZSTD_createDStream", "ZSTD_decompressStream", "ZSTD_isError", "ZSTD_freeDStream" };
    union {
        void *slots[4];
        struct {
            ZSTD_DStream *(*createDStream)(void);
            size_t (*decompressStream)(ZSTD_DStream *, ZSTD_outBuffer *, ZSTD_inBuffer *);
            unsigned (*isError)(size_t);
            size_t (*freeDStream)(ZSTD_DStream *);
        } call;
    } zstd;
    void *library = openLibrary("libzstd.so.1", names, zstd.slots, 4);
    if (library == NULL) return HV_DECOMPRESS_LIBRARY_MISSING;
    ZSTD_DStream *stream = zstd.call.createDStream();
    if (stream == NULL) {
        dlclose(library);
        return HV_DECOMPRESS_NO_MEMORY;
    }
    ZSTD_inBuffer in = { input, length, 0 };
    ZSTD_outBuffer out = { output, capacity, 0 };
    int result = 0;
    for (;;) {
        size_t status = zstd.call.decompressStream(stream, &out, &in);
        if (zstd.call.isError(status)) { result = HV_DECOMPRESS_CORRUPT; break; }
        if (status == 0) break;  // a frame is complete
        if (out.pos == out.size) { result = HV_DECOMPRESS_TOO_LARGE; break; }
        if (in.pos == in.size) { result = HV_DECOMPRESS_TRUNCATED; break; }
    }
    *written = out.pos;
    zstd.call.freeDStream(stream);
    dlclose(library);
    return result;
}
