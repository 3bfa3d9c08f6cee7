/* tokenizer.h: Llama 2 (SentencePiece-style, "llama") and Llama 3 (byte-level BPE,
 * "gpt2") tokenizers, built from GGUF metadata (tokenizer.ggml.*) or, for Hugging
 * Face folders, from tokenizer.json.
 *
 * Encoding follows llama.cpp's llama-vocab.cpp behaviour exactly (tested on its
 * test vectors): SPM with the "▁" space prefix and byte fallback; BPE with the
 * pre-tokenizer split regex (PCRE2, Unicode) and ranked merges. Supported: GGUF
 * tokenizer.ggml.model "llama" and "gpt2" with pre "llama-bpe"/"llama3"/"llama-v3";
 * tokenizer.json with a BPE model and Llama 3's pre-tokenizer (Split + ByteLevel).
 *
 * Decoding concatenates llama_token_to_piece-style pieces, so an SPM text keeps
 * the leading space its "▁" prefix gives (llama_detokenize would strip it).
 * A built tokenizer is immutable: encode/decode may run from several threads.
 */
#ifndef TEMPO_TOKENIZER_H
#define TEMPO_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf_file;
struct tp_ledger;

typedef enum { TOK_SPM = 1, TOK_BPE = 2 } tok_kind;

/* token_type values, as in GGUF */
enum { TOKT_NORMAL = 1, TOKT_UNKNOWN = 2, TOKT_CONTROL = 3, TOKT_USER = 4, TOKT_UNUSED = 5, TOKT_BYTE = 6 };

typedef struct tokenizer tokenizer;
typedef struct tokenizer tp_tokenizer;

/* Building never aborts: out of memory is a NULL with "<file>: out of memory (N bytes
 * for ...)" in err (TP_ERR_LEN bytes), like any other failure. */
tokenizer *tp_tokenizer_from_gguf(const struct gguf_file *f, char *err);
/* dir holds tokenizer.json (required) and tokenizer_config.json (optional). */
tokenizer *tp_tokenizer_from_hf(const char *dir, char *err);
/* The same, for a model: every token id must be below max_vocab (the embedding's
 * rows; checked before anything is sized by an id), and what building costs is
 * charged to led first (both may be 0 / NULL: no model, no limit). Without
 * max_vocab a tokenizer.json's ids may leave at most as many gaps as it has
 * entries (its size comes from its entries, not from its largest id).
 * tokenizer.json is read in one streaming pass (format/json.h): memory is the
 * file plus what the tokenizer keeps, whatever the file holds. */
tokenizer *tp_tokenizer_from_gguf_ex(const struct gguf_file *f, int max_vocab, struct tp_ledger *led, char *err);
tokenizer *tp_tokenizer_from_hf_ex(const char *dir, int max_vocab, struct tp_ledger *led, char *err);
void tp_tokenizer_free(tokenizer *t);

tok_kind tp_tokenizer_kind(const tokenizer *t);
int tp_tokenizer_vocab_size(const tokenizer *t);
int tp_tokenizer_bos(const tokenizer *t); /* -1 if none */
int tp_tokenizer_eos(const tokenizer *t); /* -1 if none */
int tp_tokenizer_eot(const tokenizer *t); /* end of turn (<|eot_id|>), -1 if none */
bool tp_tokenizer_adds_bos(const tokenizer *t);
/* End-of-generation: eos, eot, eom and the like. */
bool tp_tokenizer_is_eog(const tokenizer *t, int id);
/* Mark one more id as end-of-generation (e.g. eos ids listed in a model's config). */
void tp_tokenizer_add_eog(tokenizer *t, int id);

/* Encode text. add_bos: prepend BOS when the tokenizer has one and wants it
 * (add_bos=false never adds). parse_special: text like "<|eot_id|>" that spells
 * a control/special token becomes that token (user-defined tokens always do, as
 * llama.cpp). add_bos also appends EOS when the tokenizer asks for that
 * (tokenizer.ggml.add_eos_token; llama.cpp's add_special). Returns the number of ids written
 * into out (at most cap) -- or the number needed if it exceeds cap; -1 on error (bad
 * arguments, a text the BPE split regex fails on); TP_TOK_NOMEM when out of memory (encoding
 * allocates scratch per call; nothing is written into out then). */
#define TP_TOK_NOMEM (-2)
int tp_tokenizer_encode(const tokenizer *t, const char *text, bool add_bos, bool parse_special,
                     int32_t *out, int cap);

/* Bytes of one token as it appears in text ("▁" -> space, <0x0A> -> "\n", GPT-2
 * byte mapping undone). Control tokens give "" unless show_special. Returns the
 * length written (the piece may be longer than cap: then -needed). */
int tp_tokenizer_piece(const tokenizer *t, int id, bool show_special, char *buf, int cap);
/* Decode a sequence (the first piece after BOS keeps its leading space, as llama.cpp).
 * Control tokens are left out; the result is malloc'ed and NUL-terminated, NULL when
 * out of memory. */
char *tp_tokenizer_decode(const tokenizer *t, const int32_t *ids, int n);
/* The same, writing control tokens (e.g. "<|eot_id|>") as their text when show_special. */
char *tp_tokenizer_decode_special(const tokenizer *t, const int32_t *ids, int n, bool show_special);
/* The token's vocabulary string as stored (e.g. "▁the"); NULL for a bad id. */
const char *tp_tokenizer_token_text(const tokenizer *t, int id);
/* TOKT_* of a token (0 for a bad id). */
int tp_tokenizer_token_type(const tokenizer *t, int id);
/* Id of an exact vocabulary string, or -1. */
int tp_tokenizer_find(const tokenizer *t, const char *text);

/* The model's chat template (Jinja text, for src/chat to recognise), NULL if it has
 * none: GGUF tokenizer.chat_template; in a Hugging Face folder the file
 * chat_template.jinja, else tokenizer_config.json's chat_template (a string, or the
 * "default" entry of a list of {name, template}). */
const char *tp_tokenizer_chat_template(const tokenizer *t);

#endif
