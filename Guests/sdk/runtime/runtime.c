/* The few C library symbols freestanding C and Embedded Swift code needs: memory functions,
 * a bump allocator, putchar (what Embedded Swift's print calls), and the stack protector. */
#include <stddef.h>
#include <stdint.h>
#include "hvkit_guest.h"

void *memset(void *destination, int value, size_t count) {
    unsigned char *d = destination;
    while (count--) *d++ = (unsigned char)value;
    return destination;
}

void *memcpy(void *destination, const void *source, size_t count) {
    unsigned char *d = destination;
    const unsigned char *s = source;
    while (count--) *d++ = *s++;
    return destination;
}

void *memmove(void *destination, const void *source, size_t count) {
    unsigned char *d = destination;
    const unsigned char *s = source;
    if (d < s) {
        while (count--) *d++ = *s++;
    } else {
        d += count;
        s += count;
        while (count--) *--d = *--s;
    }
    return destination;
}

int memcmp(const void *left, const void *right, size_t count) {
    const unsigned char *l = left, *r = right;
    for (; count; count--, l++, r++)
        if (*l != *r) return *l < *r ? -1 : 1;
    return 0;
}

size_t strlen(const char *text) {
    size_t length = 0;
    while (text[length]) length++;
    return length;
}

/* A bump allocator over a static heap; free does nothing. Guests here are short-lived. */
static unsigned char heap[256 * 1024] __attribute__((aligned(64)));
static size_t heap_used;

int posix_memalign(void **result, size_t alignment, size_t size) {
    if (alignment < sizeof(void *)) alignment = sizeof(void *);
    size_t start = (heap_used + alignment - 1) & ~(alignment - 1);
    if (start + size > sizeof(heap) || start + size < start) return 12; /* ENOMEM */
    heap_used = start + size;
    *result = heap + start;
    return 0;
}

void *malloc(size_t size) {
    void *result;
    return posix_memalign(&result, 16, size) == 0 ? result : 0;
}

void free(void *pointer) { (void)pointer; }

/* Console output is line-buffered: one hypercall per line, not per character. */
static char line[256];
static size_t line_length;

static void flush_line(void) {
    if (line_length) hv_console_write(line, line_length);
    line_length = 0;
}

int putchar(int character) {
    line[line_length++] = (char)character;
    if (character == '\n' || line_length == sizeof(line)) flush_line();
    return character;
}

void hv_flush_console(void) { flush_line(); }

uintptr_t __stack_chk_guard = 0x595e9fbd94fda766ULL;

void __stack_chk_fail(void) {
    static const char message[] = "stack smashing detected";
    flush_line();
    hv_abort(message, sizeof(message) - 1);
    for (;;) {}
}
