#include "CKernelDecompress.h"

#include <lz4.h>
#include <lzma.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

int hv_decompress_gzip(const uint8_t *input, size_t length, uint8_t *output, size_t capacity, size_t *written) {
    *written = 0;
    z_stream stream;
    memset(&stream, 0, sizeof stream);
    // 16 + MAX_WBITS: a gzip header and trailer, not zlib's.
    if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) return HV_DECOMPRESS_NO_MEMORY;
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
        int status = inflate(&stream, Z_NO_FLUSH);
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
    inflateEnd(&stream);
    *written = produced;
    return result;
}

int hv_decompress_xz(const uint8_t *input, size_t length, uint8_t *output, size_t capacity, size_t *written) {
    *written = 0;
    uint64_t memoryLimit = UINT64_MAX;
    size_t inPosition = 0, outPosition = 0;
    // One call over the whole buffer; the kernel's xz streams use CRC32 and one block.
    lzma_ret status = lzma_stream_buffer_decode(&memoryLimit, 0, NULL, input, &inPosition, length,
                                                output, &outPosition, capacity);
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
    const uint32_t magic = 0x184C2102;
    size_t position = 0, produced = 0;
    // Legacy blocks decompress to at most 8 MiB each.
    const size_t blockMaximum = 8u << 20;
    for (;;) {
        if (position == length) break;
        if (length - position < 4) return HV_DECOMPRESS_TRUNCATED;
        uint32_t word = (uint32_t)input[position] | (uint32_t)input[position + 1] << 8
            | (uint32_t)input[position + 2] << 16 | (uint32_t)input[position + 3] << 24;
        position += 4;
        if (word == magic) continue;  // the start of a (further) frame
        if (word == 0 || word > LZ4_compressBound((int)blockMaximum)) return HV_DECOMPRESS_CORRUPT;
        if (length - position < word) return HV_DECOMPRESS_TRUNCATED;
        size_t room = capacity - produced;
        int limit = room > blockMaximum ? (int)blockMaximum : (int)room;
        int count = LZ4_decompress_safe((const char *)input + position, (char *)output + produced, (int)word, limit);
        if (count < 0) return room < blockMaximum ? HV_DECOMPRESS_TOO_LARGE : HV_DECOMPRESS_CORRUPT;
        produced += (size_t)count;
        position += word;
        *written = produced;
    }
    return 0;
}

int hv_decompress_zstd(const uint8_t *input, size_t length, uint8_t *output, size_t capacity, size_t *written) {
    *written = 0;
    ZSTD_DStream *stream = ZSTD_createDStream();
    if (stream == NULL) return HV_DECOMPRESS_NO_MEMORY;
    ZSTD_inBuffer in = { input, length, 0 };
    ZSTD_outBuffer out = { output, capacity, 0 };
    int result = 0;
    for (;;) {
        size_t status = ZSTD_decompressStream(stream, &out, &in);
        if (ZSTD_isError(status)) { result = HV_DECOMPRESS_CORRUPT; break; }
        if (status == 0) break;  // a frame is complete
        if (out.pos == out.size) { result = HV_DECOMPRESS_TOO_LARGE; break; }
        if (in.pos == in.size) { result = HV_DECOMPRESS_TRUNCATED; break; }
    }
    *written = out.pos;
    ZSTD_freeDStream(stream);
    return result;
}
