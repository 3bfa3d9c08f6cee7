/* fuzz_tokenizer_json.c: tokenizer.json through the streaming reader and the
 * tokenizer build (with and without a model's row count and memory limit),
 * then encode and decode on what it built. The first byte chooses the limits
 * and whether a tokenizer_config.json is present; the rest is the file. */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/checked.h"
#include "core/common.h"
#include "tokenizer/tokenizer.h"

static const char *const texts[] = {
    "Hello world", " the  the\n\n", "<|begin_of_text|>hi<|eot_id|>", "\xff\xfe bad \xc3", "12345 abc's ",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t mode = data[0];
    fuzz_write(fuzz_path(0, "tokenizer.json"), data + 1, size - 1);
    const char *cfg = fuzz_path(1, "tokenizer_config.json");
    if (mode & 1) fuzz_write_text(cfg, fuzz_tiny_tokenizer_config_json);
    else unlink(cfg);
    int max_vocab = mode & 2 ? 262 : mode & 4 ? 100000 : 0;
    tp_ledger led = { .limit = mode & 8 ? (1u << 20) : FUZZ_MAX_BYTES };
    char err[TP_ERR_LEN] = "";
    tokenizer *t = tp_tokenizer_from_hf_ex(fuzz_dir(), max_vocab, &led, err);
    if (!t) {
        fuzz_check_error(err);
        return 0;
    }
    int V = tp_tokenizer_vocab_size(t);
    if (max_vocab && V > max_vocab) abort();
    int32_t ids[256];
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        int n = tp_tokenizer_encode(t, texts[k], k & 1, k & 2, ids, 256);
        if (n > 256) n = 256;
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= V) abort();
        if (n > 0) free(tp_tokenizer_decode_special(t, ids, n, k & 1));
    }
    char piece[64];
    for (int id = 0; id < V && id < 300; id++) tp_tokenizer_piece(t, id, true, piece, sizeof piece);
    tp_tokenizer_free(t);
    return 0;
}
