/* fuzz_gguf.c: a GGUF file through the reader (every key and array through
 * every getter), the model loader (hyperparameters, tokenizer, tensors) and,
 * when it loads, two forward passes. */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "format/gguf.h"

static void poke_reader(const gguf_file *f) {
    char err[TP_ERR_LEN];
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        char key[128];
        if (kv->key.len >= sizeof key || memchr(kv->key.str, 0, (size_t)kv->key.len)) continue;
        memcpy(key, kv->key.str, (size_t)kv->key.len);
        key[kv->key.len] = 0;
        int64_t iv;
        double dv;
        bool bv;
        tp_gguf_get_int(f, key, &iv, err);
        tp_gguf_get_float(f, key, &dv, err);
        tp_gguf_get_bool(f, key, &bv, err);
        free(tp_gguf_get_string(f, key));
        const gguf_value *v = &kv->value;
        if (v->type == GGUF_ARRAY && v->v.arr.count) {
            uint64_t last = v->v.arr.count - 1;
            (void)tp_gguf_arr_int(v, 0);
            (void)tp_gguf_arr_int(v, last);
            (void)tp_gguf_arr_float(v, last);
            (void)tp_gguf_arr_str(v, last);
            (void)tp_gguf_arr_int(v, last + 1);
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (tp_gguf_find_tensor(f, f->tensors[i].name) == NULL) abort(); /* the index must find every tensor */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path(0, "in.gguf");
    fuzz_write(path, data, size);
    char err[TP_ERR_LEN] = "";
    gguf_file *f = tp_gguf_open(path, err);
    if (!f) {
        fuzz_check_error(err);
        return 0;
    }
    poke_reader(f);
    tp_gguf_close(f);
    tp_load_opts o = fuzz_load_opts();
    err[0] = 0;
    tp_model *m = tp_model_load_gguf(path, &o, err);
    if (!m) {
        fuzz_check_error(err);
        return 0;
    }
    fuzz_run_model(m);
    tp_model_free(m);
    return 0;
}
