/* hf.c: Hugging Face model folders (config.json + safetensors + tokenizer.json).
 * Not implemented yet: the loader says so clearly. */
#include "model/model.h"

#include "core/common.h"

tp_model *tp_model_load_hf(const char *dir, const tp_load_opts *opts, char *err) {
    (void)opts;
    tp_fail(err, "%s: Hugging Face model folders are not supported yet", dir);
    return NULL;
}
