/*
util.c: the few basics every part of the program shares: error messages and checked allocation.
Included first by aurora.c (one translation unit).
*/
#include <stdarg.h>
#include <time.h>
#include "aurora.h"

int error_set(Error* err, const char* format, ...) {
    if (err != NULL) {
        va_list args;
        va_start(args, format);
        vsnprintf(err->message, sizeof(err->message), format, args);
        va_end(args);
    }
    return -1;
}

void* checked_malloc(size_t size, const char* file, int line) {
    void* pointer = malloc(size == 0 ? 1 : size);
    if (pointer == NULL) {
        fprintf(stderr, "error: out of memory allocating %zu bytes at %s:%d\n", size, file, line);
        exit(EXIT_FAILURE);
    }
    return pointer;
}

void* checked_calloc(size_t count, size_t size, const char* file, int line) {
    void* pointer = calloc(count == 0 ? 1 : count, size == 0 ? 1 : size);
    if (pointer == NULL) {
        fprintf(stderr, "error: out of memory allocating %zu x %zu bytes at %s:%d\n", count, size, file, line);
        exit(EXIT_FAILURE);
    }
    return pointer;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
