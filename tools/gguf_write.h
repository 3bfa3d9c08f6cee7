/* gguf_write.h: a GGUF writer, for the tests and the benchmark to make their own files (random
 * 1B-shape models, corrupted headers, exported copies). A tool, not part of the library. */
#ifndef TEMPO_TOOLS_GGUF_WRITE_H
#define TEMPO_TOOLS_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "format/gguf.h"

/* ---- writer (used by tests and the benchmark to make their own files) ----
 * Writes GGUF v3. Setting a key that is already set replaces its value (so a
 * copied key can be overridden). Invalid input (unknown tensor type, bad shape,
 * duplicate tensor name, ...) is remembered and reported by tp_gguf_writer_save.
 * `general.alignment` is managed by the writer: it is written (as u32) exactly
 * when the alignment is not the default 32; a user-set or copied value is dropped. */
typedef struct gguf_writer gguf_writer;
/* alignment: a power of two (0 means the default, 32). */
gguf_writer *tp_gguf_writer_new(uint32_t alignment);
void tp_gguf_writer_free(gguf_writer *w);
void tp_gguf_w_u32(gguf_writer *w, const char *key, uint32_t v);
void tp_gguf_w_i32(gguf_writer *w, const char *key, int32_t v);
void tp_gguf_w_f32(gguf_writer *w, const char *key, float v);
void tp_gguf_w_bool(gguf_writer *w, const char *key, bool v);
void tp_gguf_w_str(gguf_writer *w, const char *key, const char *v);
void tp_gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *v, size_t n);
void tp_gguf_w_arr_f32(gguf_writer *w, const char *key, const float *v, size_t n);
void tp_gguf_w_arr_i32(gguf_writer *w, const char *key, const int32_t *v, size_t n);
/* The other scalar types, and arrays of any scalar type (v: n packed values of elem_type). */
void tp_gguf_w_u8(gguf_writer *w, const char *key, uint8_t v);
void tp_gguf_w_i8(gguf_writer *w, const char *key, int8_t v);
void tp_gguf_w_u16(gguf_writer *w, const char *key, uint16_t v);
void tp_gguf_w_i16(gguf_writer *w, const char *key, int16_t v);
void tp_gguf_w_u64(gguf_writer *w, const char *key, uint64_t v);
void tp_gguf_w_i64(gguf_writer *w, const char *key, int64_t v);
void tp_gguf_w_f64(gguf_writer *w, const char *key, double v);
void tp_gguf_w_arr(gguf_writer *w, const char *key, uint32_t elem_type, const void *v, size_t n);
/* Any parsed value (e.g. from another file), arrays of arrays included. */
void tp_gguf_w_value(gguf_writer *w, const char *key, const gguf_value *v);
/* Copy every metadata key of an open file (e.g. a tokenizer) into the writer;
 * prefix NULL or "" copies all keys, else only keys starting with prefix. */
void tp_gguf_w_copy_kv(gguf_writer *w, const gguf_file *src, const char *prefix);
/* Add a tensor; data (nbytes computed from type and ne) is copied. */
void tp_gguf_w_tensor(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                   const uint64_t *ne, const void *data);
/* Add a tensor without copying: data must stay valid until tp_gguf_writer_save returns. */
void tp_gguf_w_tensor_ref(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                       const uint64_t *ne, const void *data);
/* Add a tensor whose data is produced at save time, one row (ne[0] elements,
 * row_bytes bytes) at a time: rows are numbered 0 .. ne[1]*ne[2]*ne[3]-1. Lets the
 * benchmark write multi-GB files without holding them in memory. */
typedef void (*gguf_row_fn)(void *ctx, uint64_t row, void *dst, size_t row_bytes);
void tp_gguf_w_tensor_rows(gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                        const uint64_t *ne, gguf_row_fn fill, void *ctx);
/* Write the file; 0 on success, -1 and a one-line err (starting with path) on
 * failure (a partial file is removed). The writer can be saved again or freed. */
int tp_gguf_writer_save(gguf_writer *w, const char *path, char *err);

#endif
