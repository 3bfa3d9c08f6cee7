/* gguf.h: GGUF v2/v3 reader (memory-mapped). (The writer tests and tools use is tools/gguf_write.h.)
 *
 * The reader maps the whole file read-only, parses the header, every metadata
 * key/value (all value types, arrays nested to any depth) and every tensor info,
 * and checks every count, length, offset and size against the file size before
 * anything is used. Tensor data pointers point into the mapping: nothing is
 * copied. A bad file gives NULL and a one-line message in err. The mapping is
 * registered (core/mapreg.h) so that a SIGBUS reading it can name the file.
 */
#ifndef TEMPO_GGUF_H
#define TEMPO_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/checked.h"

enum gguf_vtype {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
    GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10,
    GGUF_I64 = 11, GGUF_F64 = 12,
};

typedef struct {
    uint64_t len;
    const char *str; /* points into the mapping; NOT NUL-terminated */
} gguf_str;

typedef struct gguf_value gguf_value;
struct gguf_value {
    uint32_t type; /* enum gguf_vtype */
    union {
        uint64_t u;  /* all unsigned ints and bool */
        int64_t i;   /* all signed ints */
        double f;    /* f32 and f64 */
        gguf_str s;
        struct {
            uint32_t elem_type;
            uint64_t count;
            const void *raw;       /* for scalar element types: the packed little-endian data in the file */
            gguf_value *items;     /* for STRING and ARRAY element types: parsed items (count of them) */
        } arr;
    } v;
};

typedef struct {
    gguf_str key;
    gguf_value value;
} gguf_kv;

typedef struct {
    char name[72];       /* NUL-terminated copy */
    uint32_t n_dims;
    uint64_t ne[4];      /* ne[0] innermost; unused dims are 1 */
    uint32_t type;       /* ggml type id (tensor/dtype.h) */
    uint64_t offset;     /* relative to the data section */
    uint64_t nbytes;
    const void *data;    /* inside the mapping */
} gguf_tensor;

typedef struct gguf_file {
    char *path;
    const uint8_t *map;
    size_t map_size;
    uint32_t version;
    uint64_t alignment;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    size_t data_offset;  /* start of the tensor data section in the file */
    size_t *kv_order;     /* kv indexes sorted by key (lookup) */
    size_t *tensor_order; /* tensor indexes sorted by name (lookup) */
    tp_ledger *ledger;    /* what the parsed metadata is charged to (NULL: not counted) */
    size_t charged;       /* bytes charged for the tables (array items are charged one by one) */
} gguf_file;

gguf_file *tp_gguf_open(const char *path, char *err);
/* The same, charging every allocation the parse makes (kv and tensor tables,
 * parsed arrays) to led before making it; the charges are released by
 * tp_gguf_close. The mapping itself is not charged (the caller knows the file
 * size). The ledger must outlive the file. */
gguf_file *tp_gguf_open_ex(const char *path, tp_ledger *led, char *err);
void tp_gguf_close(gguf_file *f);

/* Metadata lookup. NULL when absent. */
const gguf_kv *tp_gguf_find(const gguf_file *f, const char *key);
/* Typed getters: return false if absent; set err and return false if present with
 * an incompatible type (any integer width converts to any integer when it fits). */
bool tp_gguf_get_int(const gguf_file *f, const char *key, int64_t *out, char *err);
bool tp_gguf_get_float(const gguf_file *f, const char *key, double *out, char *err);
bool tp_gguf_get_bool(const gguf_file *f, const char *key, bool *out, char *err);
/* String: returns a malloc'ed NUL-terminated copy or NULL if absent/wrong type,
 * or when the copy cannot be allocated (a caller that found the key with
 * tp_gguf_find first knows NULL then means out of memory). */
char *tp_gguf_get_string(const gguf_file *f, const char *key);
/* String into buf (at most cap - 1 bytes, NUL-terminated): its full length, or
 * -1 if absent or not a string. For short values compared with known names
 * (architecture, tokenizer model): nothing is allocated for a hostile 1 GB one. */
int64_t tp_gguf_get_str(const gguf_file *f, const char *key, char *buf, size_t cap);
/* Whether key holds exactly the string lit. */
bool tp_gguf_str_is(const gguf_file *f, const char *key, const char *lit);
/* Array element readers (arr must be a GGUF_ARRAY value). */
int64_t tp_gguf_arr_int(const gguf_value *arr, uint64_t i);
double tp_gguf_arr_float(const gguf_value *arr, uint64_t i);
gguf_str tp_gguf_arr_str(const gguf_value *arr, uint64_t i);

const gguf_tensor *tp_gguf_find_tensor(const gguf_file *f, const char *name);



#endif
