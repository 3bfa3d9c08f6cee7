/* fuzz_tok_encode.c: encode and decode arbitrary text (invalid UTF-8, special
 * token texts, long runs) with both real vocabularies: Llama 2's SentencePiece
 * and Llama 3's byte-level BPE (from ../shared/tokenizer-tests). The first
 * byte picks the vocabulary and the flags; the rest is the text, whose ids are
 * then decoded, and whose bytes are also decoded as ids. */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "format/gguf.h"
#include "tokenizer/tokenizer.h"

static tokenizer *vocab[2];

static tokenizer *load(const char *path) {
    char err[TP_ERR_LEN];
    gguf_file *f = tp_gguf_open(path, err);
    tokenizer *t = f ? tp_tokenizer_from_gguf(f, err) : NULL;
    if (!t) { fprintf(stderr, "fuzz_tok_encode: %s (run from the repository root, next to ../shared)\n", err); abort(); }
    tp_gguf_close(f);
    return t;
}

static void unload(void) {
    tp_tokenizer_free(vocab[0]);
    tp_tokenizer_free(vocab[1]);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    const char *shared = getenv("TEMPO_SHARED");
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/tokenizer-tests/llama.cpp/ggml-vocab-llama-spm.gguf", shared ? shared : "../shared");
    snprintf(b, sizeof b, "%s/tokenizer-tests/generated/ggml-vocab-llama3-from-tokenizer-json.gguf",
             shared ? shared : "../shared");
    vocab[0] = load(a);
    vocab[1] = load(b);
    atexit(unload);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 1 << 16) return 0;
    uint8_t mode = data[0];
    const tokenizer *t = vocab[mode & 1];
    char *text = malloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0; /* the API takes C strings: text up to the first NUL */
    int cap = (int)size * 2 + 8;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    int n = tp_tokenizer_encode(t, text, mode & 2, mode & 4, ids, cap);
    if (n > cap) n = cap; /* only the first cap were written */
    int V = tp_tokenizer_vocab_size(t);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) abort();
    if (n > 0) {
        char *d = tp_tokenizer_decode_special(t, ids, n, mode & 8);
        free(d);
    }
    /* the input's bytes as ids, many of them out of range */
    int m = (int)(size - 1) / 4;
    for (int i = 0; i < m; i++) {
        int32_t v;
        memcpy(&v, data + 1 + 4 * i, 4);
        ids[i] = mode & 16 ? v : (int32_t)((uint32_t)v % (uint32_t)(V + 8));
        char piece[32];
        tp_tokenizer_piece(t, ids[i], mode & 8, piece, sizeof piece);
        (void)tp_tokenizer_token_text(t, ids[i]);
        (void)tp_tokenizer_is_eog(t, ids[i]);
    }
    free(tp_tokenizer_decode(t, ids, m));
    free(ids);
    free(text);
    return 0;
}
