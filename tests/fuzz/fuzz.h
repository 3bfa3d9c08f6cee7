/* fuzz.h: what the libFuzzer harnesses in tests/fuzz/ share.
 *
 * Each harness fuzz_<name>.c defines LLVMFuzzerTestOneInput (and maybe
 * LLVMFuzzerInitialize). It is built two ways:
 *   - with clang -fsanitize=fuzzer,address,undefined (make fuzz, .ci/run), and
 *   - with gcc's ASan+UBSan and replay_main.c (make test), which feeds it every
 *     file of tests/fuzz/corpus/<name>/ (the seeds) and
 *     tests/fuzz/regressions/<name>/ (every crash ever found, kept).
 *
 * The parsers take paths, so inputs are written to files in a private
 * directory (on /dev/shm when there is one). Every harness also checks the
 * library's error contract: a failure leaves a non-empty, one-line message.
 */
#ifndef TEMPO_FUZZ_H
#define TEMPO_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The harness's private directory (created on first use, removed at exit). */
const char *fuzz_dir(void);
/* dir/name, in a static buffer per call site slot (slot 0..3). */
const char *fuzz_path(int slot, const char *name);
void fuzz_write(const char *path, const void *data, size_t n);
void fuzz_write_text(const char *path, const char *text);
/* abort() unless err is a non-empty line without a newline (the fuzzer reports it). */
void fuzz_check_error(const char *err);

/* The memory limit every harness loads under: a file may not make the loader
 * allocate more than this (the fuzzer's own malloc limit is above it). */
#define FUZZ_MAX_BYTES ((size_t)256 << 20)
/* Load options for harnesses: one thread, small batch and cache. */
tp_load_opts fuzz_load_opts(void);
/* Tokenize a little text and run two forwards over it (a prompt, then a
 * two-token TEMPO set at one position); errors are checked, not fatal. */
void fuzz_run_model(tp_model *m);

/* Tiny valid models, for seeds and as the fixed part of the config harness. */
enum {
    TINY_BPE = 1,        /* gpt2 / llama-bpe tokenizer with merges (else llama SPM) */
    TINY_Q8 = 2,         /* Q8_0 matrices (dim 32) */
    TINY_F16 = 4,        /* F16 matrices and norms */
    TINY_TIED = 8,       /* no output.weight */
    TINY_ROPE_FREQS = 16, /* rope_freqs.weight */
    TINY_GQA = 32,       /* 2 query heads over 1 KV head */
};
bool fuzz_tiny_gguf(const char *path, int variant);
/* A Hugging Face folder: model.safetensors, config.json, generation_config.json,
 * tokenizer.json, tokenizer_config.json (a byte-level BPE of 262 tokens). */
bool fuzz_tiny_hf(const char *dir);
/* The texts fuzz_tiny_hf writes (for seeds). */
extern const char fuzz_tiny_config_json[], fuzz_tiny_generation_config_json[], fuzz_tiny_tokenizer_config_json[];
/* tokenizer.json of fuzz_tiny_hf (malloc'ed). */
char *fuzz_tiny_tokenizer_json(bool pair_merges, bool template_sequence);

#endif
