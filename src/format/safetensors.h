/* safetensors.h: safetensors reader (memory-mapped, single file or sharded).
 * (The writer tests and tools use is tools/st_write.h.)
 *
 * A safetensors file is a little-endian uint64 header length N, N bytes of JSON
 * ({"__metadata__": {...}, "<name>": {"dtype", "shape", "data_offsets"}}), then
 * the tensor data; offsets are relative to the first byte after the header and
 * shapes are outermost first (a Hugging Face [out, in] matrix is GGUF ne [in, out]
 * with the same bytes).
 *
 * The reader maps the file read-only and checks, before anything is used: the
 * header length against the file, the JSON, every dtype, that each tensor's byte
 * span equals its shape times its element size, that spans lie inside the data
 * and do not overlap. Tensor data pointers point into the mapping. A bad file
 * gives NULL and one line in err that starts with the file's name.
 *
 * A model folder holds either model.safetensors or model.safetensors.index.json
 * ({"weight_map": {tensor: shard file}}) and its shards; st_set opens either.
 */
#ifndef TEMPO_SAFETENSORS_H
#define TEMPO_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/checked.h"

#define ST_MAX_DIMS 8
#define ST_TYPE_OTHER UINT32_MAX /* a dtype the file may hold but tempo cannot compute with */

struct st_file;

typedef struct {
    char *name;                   /* points into the file's header copy */
    char dtype[12];               /* as written in the file: "BF16", "F32", "I64", ... */
    uint32_t type;                /* TP_F32, TP_F16, TP_BF16, or ST_TYPE_OTHER */
    int n_dims;
    uint64_t shape[ST_MAX_DIMS];  /* outermost first, as in the file */
    uint64_t n_elems;
    uint64_t nbytes;
    const void *data;             /* inside the mapping */
    const struct st_file *file;
} st_tensor;

typedef struct st_file {
    char *path;
    const char *base;             /* file name within path, for messages */
    const uint8_t *map;
    size_t map_size;
    size_t data_offset;           /* 8 + header length */
    int n_tensors;
    st_tensor *tensors;           /* sorted by name */
    char *header;                 /* heap copy of the header JSON (holds the names) */
    tp_ledger *ledger;            /* what the tables are charged to (NULL: not counted) */
    size_t charged;
} st_file;

st_file *tp_st_open(const char *path, char *err);
/* The same, charging the header copy and tensor table to led first (released
 * by tp_st_close; the ledger must outlive the file or be detached). The mapping
 * is registered (core/mapreg.h) for SIGBUS messages. */
st_file *tp_st_open_ex(const char *path, tp_ledger *led, char *err);
void tp_st_close(st_file *f);
const st_tensor *tp_st_find(const st_file *f, const char *name);

/* The weights of a model folder: one file or the shards named by the index. */
typedef struct {
    int n_files;
    st_file **files;
    int n_tensors;
    const st_tensor **tensors;    /* every tensor of every shard, sorted by name */
} st_set;

/* dir/model.safetensors.index.json if present (every shard it names is opened and
 * every tensor it lists must be in its shard), else dir/model.safetensors. */
st_set *tp_st_set_open(const char *dir, char *err);
st_set *tp_st_set_open_ex(const char *dir, tp_ledger *led, char *err);
/* Stop charging the set's files to their ledger (before the ledger goes away). */
void tp_st_set_detach_ledger(st_set *s);
void tp_st_set_free(st_set *s);
const st_tensor *tp_st_set_find(const st_set *s, const char *name);
/* Bytes of the weight files tp_st_set_open would map (the shards the index names, or
 * model.safetensors), without opening them: for the memory check before loading.
 * Other .safetensors files in the folder (e.g. Mistral's consolidated.safetensors)
 * are not counted. -1 with err when there are none. */
int64_t tp_st_set_file_bytes(const char *dir, char *err);

/* Element size of a safetensors dtype name, 0 if unknown. */
size_t tp_st_dtype_size(const char *dtype);

#endif
