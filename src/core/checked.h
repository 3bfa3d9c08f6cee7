/* checked.h: overflow-checked size arithmetic and the loader's memory ledger.
 *
 * Every size that comes from a file (a count, a dimension, a byte length) is
 * combined with these helpers, in 64 bits, before it is used: a product or sum
 * that would wrap is reported instead of silently becoming a small number that
 * later passes a bounds check.
 *
 * The ledger counts memory a loader is about to allocate against a limit
 * (--max-memory-gb), so that a hostile file gets a one-line error *before* the
 * allocation, not an out-of-memory abort after it.
 */
#ifndef TEMPO_CHECKED_H
#define TEMPO_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* a * b and a + b; false when the result does not fit (*out is then unspecified). */
static inline bool tp_mul_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool tp_add_u64(uint64_t a, uint64_t b, uint64_t *out) { return !__builtin_add_overflow(a, b, out); }
static inline bool tp_mul_size(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }
static inline bool tp_add_size(size_t a, size_t b, size_t *out) { return !__builtin_add_overflow(a, b, out); }
/* a * b + c (the usual "count * element size + header"). */
static inline bool tp_muladd_size(size_t a, size_t b, size_t c, size_t *out) {
    return tp_mul_size(a, b, out) && tp_add_size(*out, c, out);
}
/* A size as a saturating value: a * b, or SIZE_MAX when it overflows (for
 * estimates that are then compared with a limit). */
static inline size_t tp_mul_sat(size_t a, size_t b) {
    size_t r;
    return tp_mul_size(a, b, &r) ? r : SIZE_MAX;
}
static inline size_t tp_add_sat(size_t a, size_t b) {
    size_t r;
    return tp_add_size(a, b, &r) ? r : SIZE_MAX;
}

/* What a loader may still allocate. limit 0 means no limit (the ledger still
 * counts). A NULL ledger accepts every charge. */
typedef struct tp_ledger {
    size_t limit;  /* bytes; 0 = none */
    size_t used;   /* bytes counted so far (mapped files included) */
    size_t peak;   /* largest `used` seen */
} tp_ledger;

/* Count `bytes` before allocating them. 0, or -1 with "<what> needs X but
 * --max-memory-gb Y leaves Z" in err. */
int tp_ledger_charge(tp_ledger *l, size_t bytes, const char *what, char *err);
/* Give back what a freed temporary was charged. */
void tp_ledger_release(tp_ledger *l, size_t bytes);

/* Bytes malloc really takes for a block of n (its header and rounding), for
 * charging many small blocks: n rounded up to 16 plus 16. */
static inline size_t tp_heap_block_bytes(size_t n) { return tp_add_sat(n, 15) / 16 * 16 + 16; }

#endif
