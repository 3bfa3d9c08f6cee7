/* xalloc.h: allocation that exits on out-of-memory, for the tools (tests, fuzz
 * harnesses' setup, benchmarks) only. The library never aborts: it reports
 * every failed allocation through its `char *err` contract (core/common.h).
 * A tool that builds a test file has nothing better to do than stop. */
#ifndef TEMPO_TOOLS_XALLOC_H
#define TEMPO_TOOLS_XALLOC_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void tool_oom(size_t n) {
    fprintf(stderr, "tempo tools: out of memory allocating %zu bytes\n", n);
    abort();
}

static inline void *tool_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) tool_oom(n);
    return p;
}

static inline void *tool_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) tool_oom(size && n > SIZE_MAX / size ? SIZE_MAX : n * size);
    return p;
}

static inline void *tool_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) tool_oom(n);
    return q;
}

static inline char *tool_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = tool_xmalloc(n);
    memcpy(d, s, n);
    return d;
}

#endif
