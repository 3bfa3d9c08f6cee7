#include "core/common.h"
#include "core/checked.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int tp_fail(char *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, TP_ERR_LEN, fmt, ap);
        va_end(ap);
        /* Messages quote names and values from files (tensor names, tokens,
         * paths): a newline there would break the one-line contract, and an
         * escape sequence would reach the user's terminal. */
        for (char *p = err; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    }
    return -1;
}

/* calloc, not aligned_alloc + memset: a large calloc is fresh zero pages from the kernel, touched
 * (and counted in the resident set) only when used, where a memset faulted in every page at once.
 * A session's forward buffers are sized for 64 tokens and a batch's logits buffer for 64 x the
 * vocabulary (33 MB on a 128K vocabulary): zeroing them whole cost a server ~10-40 ms per admitted
 * request. The pointer calloc returned sits just below the aligned block, for tp_free_aligned. */
void *tp_alloc_aligned(size_t n) {
    size_t sz = n ? (n + 63) & ~(size_t)63 : 64;
    if (sz < n || sz > SIZE_MAX - 64) return NULL;
    unsigned char *raw = calloc(1, sz + 64);
    if (!raw) return NULL;
    unsigned char *p = (unsigned char *)(((uintptr_t)raw + 64) & ~(uintptr_t)63); /* raw + 16 .. raw + 64 */
    memcpy(p - sizeof raw, &raw, sizeof raw);
    return p;
}

void tp_free_aligned(void *p) {
    if (!p) return;
    void *raw;
    memcpy(&raw, (unsigned char *)p - sizeof raw, sizeof raw);
    free(raw);
}

float tp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    union { uint32_t u; float f; } v = { .u = bits };
    return v.f;
}

uint16_t tp_f32_to_f16(float f) {
    union { float f; uint32_t u; } v = { .f = f };
    uint32_t x = v.u;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    int32_t exp = (int32_t)((x >> 23) & 0xff);
    uint32_t man = x & 0x7fffff;
    if (exp == 0xff) return sign | 0x7c00 | (man ? 0x200 : 0); /* inf / nan */
    int32_t e = exp - 127 + 15;
    if (e >= 31) return sign | 0x7c00; /* overflow -> inf */
    if (e <= 0) { /* subnormal or zero */
        if (e < -10) return sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return sign | (uint16_t)half;
    }
    uint32_t half = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* may carry into exp: correct */
    return sign | (uint16_t)half;
}

uint16_t tp_f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = { .f = f };
    if ((v.u & 0x7fffffff) > 0x7f800000) return (uint16_t)((v.u >> 16) | 64); /* quiet nan */
    uint32_t rounding = 0x7fff + ((v.u >> 16) & 1);
    return (uint16_t)((v.u + rounding) >> 16);
}

const char *tp_fmt_gb(double bytes, char *buf, size_t cap) {
    double gb = bytes / (1024.0 * 1024.0 * 1024.0);
    if (gb >= 0.1 || gb == 0) snprintf(buf, cap, "%.2fGB", gb);
    else if (gb >= 0.001) snprintf(buf, cap, "%.4fGB", gb);
    else snprintf(buf, cap, "%.6fGB", gb);
    return buf;
}

double tp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

char *tp_read_file(const char *path, size_t *len_out, char *err) {
    return tp_read_file_max(path, 0, len_out, err);
}

char *tp_read_file_max(const char *path, size_t max_len, size_t *len_out, char *err) {
    /* With a cap, only regular files: a pipe or device has no size to check
     * and charge first (and opening a FIFO would block). */
    struct stat st;
    if (max_len && stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        tp_fail(err, "%s: not a regular file", path);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) { tp_fail(err, "%s: cannot open: %s", path, strerror(errno)); return NULL; }
    /* A regular file's size is known: refuse it before reading when it is over
     * the cap, and allocate it once (no doubling, no 2x peak). */
    size_t cap = 1 << 16;
    bool regular = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode);
    if (max_len && !regular) {
        fclose(f);
        tp_fail(err, "%s: not a regular file", path);
        return NULL;
    }
    if (regular) {
        if (max_len && (uint64_t)st.st_size > max_len) {
            fclose(f);
            tp_fail(err, "%s: file is %lld bytes, more than the %zu this file may have", path,
                    (long long)st.st_size, max_len);
            return NULL;
        }
        if ((uint64_t)st.st_size < SIZE_MAX - 2) cap = (size_t)st.st_size + 2;
    }
    size_t len = 0;
    char *buf = malloc(cap);
    if (!buf) { fclose(f); tp_fail(err, "%s: cannot allocate %zu bytes to read it", path, cap); return NULL; }
    for (;;) {
        if (len + 1 >= cap) {
            size_t ncap;
            char *nb = NULL;
            if (tp_mul_size(cap, 2, &ncap)) nb = realloc(buf, ncap);
            if (!nb) { free(buf); fclose(f); tp_fail(err, "%s: cannot allocate memory to read it", path); return NULL; }
            buf = nb;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
        if (max_len && len > max_len) { /* not a regular file, or it grew */
            free(buf);
            fclose(f);
            tp_fail(err, "%s: file is more than the %zu bytes this file may have", path, max_len);
            return NULL;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); tp_fail(err, "%s: read error", path); return NULL; }
    buf[len] = 0;
    if (len_out) *len_out = len;
    return buf;
}

void *tp_map_file(int fd, size_t size) {
    const size_t A = (size_t)2 << 20;
    if (size >= A) {
        uint8_t *r = mmap(NULL, size + A, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r != MAP_FAILED) {
            uint8_t *a = (uint8_t *)(((uintptr_t)r + A - 1) & ~(uintptr_t)(A - 1));
            void *m = mmap(a, size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
            if (m != MAP_FAILED) {
                size_t page = (size_t)sysconf(_SC_PAGESIZE);
                uint8_t *end = a + (size + page - 1) / page * page;
                if (a > r) munmap(r, (size_t)(a - r));
                if (r + size + A > end) munmap(end, (size_t)(r + size + A - end));
                return m;
            }
            munmap(r, size + A);
        }
    }
    return mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
}

/* ---- memory ledger (core/checked.h) ---- */

int tp_ledger_charge(tp_ledger *l, size_t bytes, const char *what, char *err) {
    if (!l) return 0;
    size_t next = tp_add_sat(l->used, bytes);
    if (l->limit && next > l->limit) {
        char a[32], c[32];
        size_t left = l->used < l->limit ? l->limit - l->used : 0;
        return tp_fail(err, "%s needs %s but --max-memory-gb %g leaves %s", what, tp_fmt_gb((double)bytes, a, sizeof a),
                       (double)l->limit / (1024.0 * 1024.0 * 1024.0), tp_fmt_gb((double)left, c, sizeof c));
    }
    l->used = next;
    if (next > l->peak) l->peak = next;
    return 0;
}

void tp_ledger_release(tp_ledger *l, size_t bytes) {
    if (!l) return;
    l->used = bytes < l->used ? l->used - bytes : 0;
}
