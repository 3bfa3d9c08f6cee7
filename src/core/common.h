/* common.h: small helpers every module uses.
 *
 * Errors: functions that can fail take `char *err` (at least TP_ERR_LEN bytes)
 * and write one line naming the problem (file, key, value, limit) into it, with
 * no trailing newline. They return NULL / -1 / false on failure. The CLI prints
 * that line and exits non-zero; the library never prints on its own.
 */
#ifndef TEMPO_COMMON_H
#define TEMPO_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TP_ERR_LEN 512

/* printf into an error buffer (NULL-safe). Always returns -1 for `return tp_fail(...)`.
 * Control characters (newlines, escapes) in the result become '?': one line, always. */
int tp_fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The library never aborts and never prints: every allocation is checked and
 * its failure returned as an error (there are no aborting x-alloc helpers;
 * tools/xalloc.h has them for the test and bench tools only). */

/* 64-byte aligned allocation (SIMD-friendly), zeroed. Free with tp_free_aligned. */
void *tp_alloc_aligned(size_t n);
/* mmap(PROT_READ, MAP_PRIVATE) of a whole file; files of 2 MiB and more at a
 * 2 MiB boundary, so that the loader can move their tensor data onto huge
 * pages (tp_weights_to_hugepages). MAP_FAILED (errno set) on failure;
 * munmap(p, size) releases it. */
void *tp_map_file(int fd, size_t size);
void tp_free_aligned(void *p);

/* IEEE half and bfloat16 conversions (exact, round-to-nearest-even on the way in). */
float tp_f16_to_f32(uint16_t h);
uint16_t tp_f32_to_f16(float f);
static inline float tp_bf16_to_f32(uint16_t b) {
    union { uint32_t u; float f; } v = { .u = (uint32_t)b << 16 };
    return v.f;
}
uint16_t tp_f32_to_bf16(float f);

/* "0.05GB" (1 GB = 1024^3 bytes): two decimals from 0.1GB up, more digits
 * below so small limits read right. Returns buf. */
const char *tp_fmt_gb(double bytes, char *buf, size_t cap);

/* Monotonic clock in seconds. */
double tp_now(void);

/* Whole file into a NUL-terminated heap buffer; NULL + err on failure. */
char *tp_read_file(const char *path, size_t *len_out, char *err);
/* The same, refusing (before reading) a file of more than max_len bytes, or with
 * a cap, anything but a regular file (0: no cap, any file). */
char *tp_read_file_max(const char *path, size_t max_len, size_t *len_out, char *err);

#endif
