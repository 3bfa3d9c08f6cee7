/* tok_internal.h: the tokenizer's private state, shared by tokenizer.c (vocabulary,
 * lookup, special tokens, decoding), spm.c, bpe.c and hf_json.c. Not part of the API.
 *
 * Building a tokenizer (both the GGUF and the tokenizer.json paths):
 *   tp_tok_build_bytes(n_vocab, text_bytes, n_merges)  what building will allocate:
 *                                                charge it to the ledger first
 *   t = tp_tok_new(kind, n_vocab, text_bytes, source, err);  all tokens UNUSED "" until set
 *   tp_tok_set_token(t, id, text, len, score, type, err) for each token
 *   tp_tok_index(t, err)                         builds the text -> id hash
 *   tp_tok_reserve_merges(t, n, err)             BPE only, after tp_tok_index, then
 *   tp_tok_add_merge(t, left, right, rank)       for each merge
 *   tp_tok_finish(t, err)                        special ids, EOG set, pieces, regex
 *
 * Nothing here aborts: every step that allocates returns NULL / false with
 * "<source>: out of memory (N bytes for ...)" in err, and the caller frees the
 * half-built tokenizer with tp_tokenizer_free. Encoding reports a failed
 * allocation as TP_TOK_NOMEM (tokenizer.h).
 */
#ifndef TEMPO_TOK_INTERNAL_H
#define TEMPO_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer/tokenizer.h"

/* Growable id vector used while encoding. false when it cannot grow. */
typedef struct {
    int32_t *v;
    int n, cap;
} tok_ivec;
bool tp_tok_ivec_push(tok_ivec *a, int32_t x);

/* Priority queue of candidate merges (min-heap on key, ties to the leftmost). */
typedef struct {
    double key;         /* SPM: -score; BPE: merge rank */
    int left, right;    /* symbol indices */
    int size;           /* SPM: byte length of the merged text (staleness check) */
    int32_t lid, rid;   /* BPE: ids of the two symbols when queued (staleness check) */
} tok_bigram;
typedef struct {
    tok_bigram *v;
    int n, cap;
} tok_heap;
bool tp_tok_heap_push(tok_heap *h, tok_bigram b); /* false when it cannot grow */
tok_bigram tp_tok_heap_pop(tok_heap *h);

/* A piece of the text being encoded (linked by index). */
typedef struct {
    const char *text; /* SPM: start of the symbol's bytes */
    int n;            /* byte length; 0 once merged into its left neighbour */
    int prev, next;
    int32_t id;       /* BPE: token id of the symbol (-1 if none) */
} tok_symbol;

struct tokenizer {
    tok_kind kind;
    int n_vocab;
    /* Random per tokenizer, mixed into both hash tables: a crafted vocabulary or
     * merge list cannot pile its entries into one probe chain (O(n^2) build). */
    uint64_t seed;
    char src[160];          /* file name, for messages */

    /* vocabulary: text of token i is arena + off[i] (NUL-terminated), len[i] bytes */
    char *arena;
    size_t arena_len, arena_cap;
    uint32_t *off, *len;
    float *score;
    uint8_t *type;          /* TOKT_* */
    uint8_t *eog;           /* 1 for end-of-generation tokens */

    /* open-addressing hash: text -> id (slot holds id, -1 empty) */
    int32_t *hash;
    uint32_t hash_mask;

    /* BPE merges: (left id, right id) -> (rank, merged id) */
    uint64_t *mkey;         /* ((uint64)left << 32 | right) + 1; 0 = empty slot */
    int32_t *mrank, *mres;
    uint32_t mmask;
    int n_merges;

    /* decoded piece of each token (as with show_special), computed once */
    char *pieces;
    uint32_t *poff, *plen;

    int32_t byte_tok[256];  /* SPM: <0xNN>; BPE: the token of byte b's GPT-2 character */

    int32_t *special;       /* control/user/unknown tokens, longest text first */
    int n_special;

    int bos, eos, eot, eom, unk;
    bool add_bos, add_eos, add_space_prefix, ignore_merges;

    pcre2_code *re;         /* BPE pre-tokenizer split */

    char *chat_template;    /* the model's Jinja chat template (malloc'ed), NULL if none */
};

/* text_bytes: the sum of the token texts' lengths (sizes the text arena once;
 * more still works, by growing it). NULL with err when out of memory. */
tokenizer *tp_tok_new(tok_kind kind, int n_vocab, size_t text_bytes, const char *source, char *err);
/* Writes "<src>: out of memory (<bytes> bytes for <what>)" into err; returns false. */
bool tp_tok_oom(char *err, const char *src, size_t bytes, const char *what);
/* n elements of size bytes (zeroed when zero), or NULL with tp_tok_oom's message
 * when the product overflows or the allocation fails. */
void *tp_tok_alloc(size_t n, size_t size, bool zero, const char *src, const char *what, char *err);
/* Upper bound of the bytes building a tokenizer of n_vocab tokens with
 * text_bytes of text and n_merges merges allocates (tables, text, pieces,
 * special list, regex). */
size_t tp_tok_build_bytes(size_t n_vocab, size_t text_bytes, size_t n_merges);
/* The largest vocabulary and merge list a tokenizer may have (ids and ranks are
 * int, text offsets uint32). */
#define TP_TOK_MAX_TOKENS (1 << 30)
#define TP_TOK_MAX_MERGES (1 << 28)
#define TP_TOK_MAX_TEXT   ((size_t)1 << 31)
/* false with err when the text arena cannot grow */
bool tp_tok_set_token(tokenizer *t, int id, const char *text, size_t len, float score, int type, char *err);
bool tp_tok_index(tokenizer *t, char *err);
int tp_tok_lookup(const tokenizer *t, const char *text, size_t len);
/* Split "left right" at the first space after the first byte (as llama.cpp). false if malformed. */
bool tp_tok_add_merge_str(tokenizer *t, const char *s, size_t len, int rank);
/* Unknown parts are skipped (they could never be used); the first of duplicates wins.
 * Allocates nothing (the table is sized by tp_tok_reserve_merges). */
void tp_tok_add_merge(tokenizer *t, const char *l, size_t ll, const char *r, size_t rl, int rank);
bool tp_tok_reserve_merges(tokenizer *t, size_t n, char *err);
bool tp_tok_merge_find(const tokenizer *t, int32_t l, int32_t r, int32_t *rank, int32_t *res);
/* Length of the UTF-8 sequence a lead byte announces (1 for stray continuation bytes). */
static inline int tok_utf8_len(uint8_t c) {
    static const uint8_t tab[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
    return tab[c >> 4];
}
bool tp_tok_finish(tokenizer *t, char *err);
/* A special id from metadata: out-of-range values (e.g. 0xFFFFFFFF) mean none. */
int tp_tok_valid_id(const tokenizer *t, int64_t id);

/* spm.c: encode one raw-text fragment (already "▁"-escaped); 0, or TP_TOK_NOMEM */
int tp_spm_encode(const tokenizer *t, const char *text, size_t len, tok_ivec *out);

/* bpe.c */
bool tp_bpe_compile_regex(tokenizer *t, char *err);
/* the GPT-2 byte <-> unicode character mapping */
int tp_bpe_byte_utf8(uint8_t b, char out[2]);         /* UTF-8 of byte b's character; its length */
int tp_bpe_char_byte(uint32_t cp);                   /* byte for a character, -1 if none */
/* 0; -1 when the split regex fails on the text; TP_TOK_NOMEM */
int tp_bpe_encode(const tokenizer *t, const char *text, size_t len, tok_ivec *out);
/* The Hugging Face spelling of the Llama 3 split regex (as in tokenizer.json). */
extern const char tp_bpe_llama3_hf_regex[];

#endif
