/* fuzz_hf_config.c: config.json, generation_config.json or tokenizer_config.json
 * (the input's first byte picks which; the rest is the file) in an otherwise
 * valid Hugging Face folder, through the whole loader and, when it loads, two
 * forward passes (RoPE scaling, head sizes and ids all come from these files). */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "model/hf.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fuzz_tiny_hf(fuzz_dir())) abort();
    return 0;
}

static const char *const names[3] = { "config.json", "generation_config.json", "tokenizer_config.json" };
static const char *const defaults[3] = { fuzz_tiny_config_json, fuzz_tiny_generation_config_json,
                                         fuzz_tiny_tokenizer_config_json };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int which = data[0] % 3;
    for (int i = 0; i < 3; i++) {
        const char *p = fuzz_path(0, names[i]);
        if (i == which) fuzz_write(p, data + 1, size - 1);
        else fuzz_write_text(p, defaults[i]);
    }
    char err[TP_ERR_LEN] = "";
    tp_load_opts o = fuzz_load_opts();
    tp_model *m = tp_model_load_hf(fuzz_dir(), &o, err);
    if (!m) {
        fuzz_check_error(err);
        return 0;
    }
    fuzz_run_model(m);
    tp_hf_free(m->hf);
    m->hf = NULL;
    tp_model_free(m);
    return 0;
}
