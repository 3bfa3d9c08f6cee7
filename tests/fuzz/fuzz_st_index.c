/* fuzz_st_index.c: model.safetensors.index.json (weight_map: tensor -> shard)
 * through the shard set reader and the pre-load size count, in a folder that
 * has two real shards (a.safetensors: x, y; b.safetensors: z). */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "format/safetensors.h"
#include "tools/st_write.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    float v[4] = { 1, 2, 3, 4 };
    uint64_t s[1] = { 4 };
    char err[TP_ERR_LEN];
    st_writer *w = tp_st_writer_new();
    tp_st_w_tensor(w, "x", "F32", 1, s, v);
    tp_st_w_tensor(w, "y", "F16", 1, s, v);
    if (tp_st_writer_save(w, fuzz_path(0, "a.safetensors"), err)) abort();
    tp_st_writer_free(w);
    w = tp_st_writer_new();
    tp_st_w_tensor(w, "z", "BF16", 1, s, v);
    if (tp_st_writer_save(w, fuzz_path(0, "b.safetensors"), err)) abort();
    tp_st_writer_free(w);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_write(fuzz_path(0, "model.safetensors.index.json"), data, size);
    char err[TP_ERR_LEN] = "";
    tp_ledger led = { .limit = FUZZ_MAX_BYTES };
    st_set *s = tp_st_set_open_ex(fuzz_dir(), &led, err);
    if (!s) fuzz_check_error(err);
    else {
        for (int i = 0; i < s->n_tensors; i++)
            if (tp_st_set_find(s, s->tensors[i]->name) != s->tensors[i]) abort();
        tp_st_set_free(s);
    }
    if (led.used) abort(); /* every charge given back */
    err[0] = 0;
    if (tp_st_set_file_bytes(fuzz_dir(), err) < 0) fuzz_check_error(err);
    return 0;
}
