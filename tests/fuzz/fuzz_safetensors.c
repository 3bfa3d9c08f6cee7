/* fuzz_safetensors.c: a safetensors file (header length, JSON header, every
 * entry's dtype, shape and offsets) through the reader. */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "format/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path(0, "in.safetensors");
    fuzz_write(path, data, size);
    char err[TP_ERR_LEN] = "";
    tp_ledger led = { .limit = FUZZ_MAX_BYTES };
    st_file *f = tp_st_open_ex(path, &led, err);
    if (!f) {
        fuzz_check_error(err);
        if (led.used) abort(); /* a failed open gives back what it charged */
        return 0;
    }
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        const uint8_t *d = t->data;
        if (d < f->map + f->data_offset || t->nbytes > (size_t)(f->map + f->map_size - d)) abort();
        if (tp_st_find(f, t->name) == NULL) abort();
        volatile uint8_t sink = t->nbytes ? d[t->nbytes - 1] : 0; /* in the mapping: ASan-clean */
        (void)sink;
    }
    tp_st_close(f);
    if (led.used) abort();
    return 0;
}
