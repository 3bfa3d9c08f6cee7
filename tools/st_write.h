/* st_write.h: a safetensors writer, for the tests, the fuzz harnesses and their
 * seed generator to make their own files (tiny Hugging Face folders, shards,
 * every dtype). A tool, not part of the library (the reader is format/safetensors.h). */
#ifndef TEMPO_TOOLS_ST_WRITE_H
#define TEMPO_TOOLS_ST_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "format/safetensors.h"

/* Tensors are written in the order added; the header is padded with spaces to a
 * multiple of 8 bytes so that every tensor's data is 8-byte aligned in the file
 * when earlier tensors' sizes are multiples of 8. Invalid input (unknown dtype,
 * bad shape, duplicate name) is remembered and reported by tp_st_writer_save.
 * Out of memory exits (tools/xalloc.h). */
typedef struct st_writer st_writer;
st_writer *tp_st_writer_new(void);
void tp_st_writer_free(st_writer *w);
/* dtype: "F32", "F16", "BF16" or any other safetensors dtype name; shape outermost
 * first; data (the product of shape times the element size bytes) is copied. */
void tp_st_w_tensor(st_writer *w, const char *name, const char *dtype, int n_dims, const uint64_t *shape,
                    const void *data);
/* A __metadata__ string entry. */
void tp_st_w_meta(st_writer *w, const char *key, const char *value);
/* 0 on success; -1 with err naming the path (a bad tensor added earlier is reported here). */
int tp_st_writer_save(st_writer *w, const char *path, char *err);

#endif
