/* tokenizer.c: the parts both tokenizer kinds share: the vocabulary and its
 * text -> id hash, BPE merge table, special tokens and the end-of-generation set,
 * splitting text on special tokens, decoding, and loading from GGUF metadata.
 * The merge algorithms themselves are in spm.c and bpe.c; tokenizer.json is
 * read by hf_json.c. Behaviour follows llama.cpp's src/llama-vocab.cpp.
 */
#include "tokenizer/tok_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/checked.h"
#include "core/common.h"
#include "format/gguf.h"

/* ---------- small containers ---------- */

/* The growth step of both containers: twice the capacity (64 at first), or 0 when that
 * would pass what an int counts (more than the caller can be told about: a failure too). */
static int grown_cap(int cap) { return !cap ? 64 : cap <= INT_MAX / 2 ? cap * 2 : 0; }

bool tp_tok_ivec_push(tok_ivec *a, int32_t x) {
    if (a->n == a->cap) {
        int cap = grown_cap(a->cap);
        int32_t *v = cap ? realloc(a->v, (size_t)cap * sizeof *v) : NULL;
        if (!v) return false; /* a->v is still valid: the caller frees it */
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return true;
}

static bool bigram_less(const tok_bigram *a, const tok_bigram *b) {
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

bool tp_tok_heap_push(tok_heap *h, tok_bigram b) {
    if (h->n == h->cap) {
        int cap = grown_cap(h->cap);
        tok_bigram *v = cap ? realloc(h->v, (size_t)cap * sizeof *v) : NULL;
        if (!v) return false;
        h->v = v;
        h->cap = cap;
    }
    int i = h->n++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!bigram_less(&b, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = b;
    return true;
}

tok_bigram tp_tok_heap_pop(tok_heap *h) {
    tok_bigram top = h->v[0];
    tok_bigram last = h->v[--h->n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && bigram_less(&h->v[c + 1], &h->v[c])) c++;
        if (!bigram_less(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n > 0) h->v[i] = last;
    return top;
}

/* ---------- vocabulary ---------- */

/* FNV-1a from a random start, in two steps so that a text in two pieces (a merge's
 * left and right) hashes as its concatenation without being copied. */
static uint64_t hash_start(uint64_t seed) { return 0xcbf29ce484222325ull ^ seed; }
static uint64_t hash_more(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
static uint64_t hash_end(uint64_t h) { return h ^ (h >> 29); }
static uint64_t hash_bytes(uint64_t seed, const char *s, size_t n) {
    return hash_end(hash_more(hash_start(seed), s, n));
}

static uint32_t pow2_at_least(size_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static uint64_t random_seed(void) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
        struct timespec ts; /* no entropy yet (early boot): the clock is still unknown to a file's author */
        clock_gettime(CLOCK_REALTIME, &ts);
        s = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&s;
    }
    return s;
}

bool tp_tok_oom(char *err, const char *src, size_t bytes, const char *what) {
    if (bytes == SIZE_MAX) tp_fail(err, "%s: out of memory (more bytes than fit in memory for %s)", src, what);
    else tp_fail(err, "%s: out of memory (%zu bytes for %s)", src, bytes, what);
    return false;
}

void *tp_tok_alloc(size_t n, size_t size, bool zero, const char *src, const char *what, char *err) {
    size_t bytes;
    void *p = NULL;
    if (n == 0) n = 1; /* malloc(0) may be NULL: never read, but not a failure either */
    if (tp_mul_size(n, size, &bytes)) p = zero ? calloc(n, size) : malloc(bytes);
    else bytes = SIZE_MAX;
    if (!p) tp_tok_oom(err, src, bytes, what);
    return p;
}

size_t tp_tok_build_bytes(size_t n_vocab, size_t text_bytes, size_t n_merges) {
    /* arena and pieces: the text twice, a NUL per token; per token: off, len,
     * score, type, eog (14), hash <= 16, poff/plen 8, special keys and list 12,
     * a loader's temporary text pointer, length and type 13 (64 covers these);
     * per merge: a slot of 16 bytes at load <= 1/2, so <= 64; the regex and its
     * JIT code about 256 KB. */
    size_t text = tp_mul_sat(tp_add_sat(text_bytes, n_vocab), 2);
    return tp_add_sat(tp_add_sat(text, tp_mul_sat(n_vocab, 64)), tp_add_sat(tp_mul_sat(n_merges, 64), 1 << 20));
}

tokenizer *tp_tok_new(tok_kind kind, int n_vocab, size_t text_bytes, const char *source, char *err) {
    if (!source) source = "tokenizer";
    tokenizer *t = tp_tok_alloc(1, sizeof *t, true, source, "the tokenizer", err);
    if (!t) return NULL;
    t->kind = kind;
    t->n_vocab = n_vocab;
    t->seed = random_seed();
    snprintf(t->src, sizeof t->src, "%s", source);
    t->bos = t->eos = t->eot = t->eom = t->unk = -1;
    size_t n = (size_t)n_vocab;
    /* the text of every token, a NUL each, and slack */
    if (!tp_add_size(text_bytes, n, &t->arena_cap) || !tp_add_size(t->arena_cap, 64, &t->arena_cap))
        t->arena_cap = SIZE_MAX; /* fails just below, with the message */
    if (!(t->arena = tp_tok_alloc(t->arena_cap, 1, false, t->src, "the vocabulary's text", err)) ||
        !(t->off = tp_tok_alloc(n, sizeof *t->off, true, t->src, "the vocabulary", err)) ||
        !(t->len = tp_tok_alloc(n, sizeof *t->len, true, t->src, "the vocabulary", err)) ||
        !(t->score = tp_tok_alloc(n, sizeof *t->score, true, t->src, "the vocabulary", err)) ||
        !(t->type = tp_tok_alloc(n, sizeof *t->type, true, t->src, "the vocabulary", err)) ||
        !(t->eog = tp_tok_alloc(n, sizeof *t->eog, true, t->src, "the vocabulary", err))) {
        tp_tokenizer_free(t);
        return NULL;
    }
    t->arena[0] = 0; /* every token starts as "" at offset 0 */
    t->arena_len = 1;
    return t;
}

bool tp_tok_set_token(tokenizer *t, int id, const char *text, size_t len, float score, int type, char *err) {
    size_t need;
    if (!tp_add_size(t->arena_len, len, &need) || !tp_add_size(need, 1, &need))
        return tp_tok_oom(err, t->src, SIZE_MAX, "the vocabulary's text");
    if (need > t->arena_cap) { /* more text than tp_tok_new was told of */
        size_t cap = t->arena_cap;
        while (cap < need) cap = tp_mul_sat(cap, 2);
        char *a = cap < SIZE_MAX ? realloc(t->arena, cap) : NULL;
        if (!a) return tp_tok_oom(err, t->src, cap, "the vocabulary's text");
        t->arena = a;
        t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, text, len);
    t->arena[t->arena_len + len] = 0;
    t->off[id] = (uint32_t)t->arena_len;
    t->len[id] = (uint32_t)len;
    t->arena_len += len + 1;
    t->score[id] = score;
    t->type[id] = (uint8_t)type;
    return true;
}

bool tp_tok_index(tokenizer *t, char *err) {
    uint32_t cap = pow2_at_least((size_t)t->n_vocab * 2);
    free(t->hash);
    t->hash = tp_tok_alloc(cap, sizeof *t->hash, false, t->src, "the vocabulary's index", err);
    if (!t->hash) return false;
    memset(t->hash, 0xff, (size_t)cap * sizeof *t->hash);
    t->hash_mask = cap - 1;
    for (int id = 0; id < t->n_vocab; id++) {
        const char *s = t->arena + t->off[id];
        uint32_t n = t->len[id];
        uint32_t h = (uint32_t)hash_bytes(t->seed, s, n) & t->hash_mask;
        for (;; h = (h + 1) & t->hash_mask) {
            int32_t o = t->hash[h];
            if (o < 0) { t->hash[h] = id; break; }
            /* a duplicate text maps to the last id that has it (as llama.cpp) */
            if (t->len[o] == n && memcmp(t->arena + t->off[o], s, n) == 0) { t->hash[h] = id; break; }
        }
    }
    return true;
}

int tp_tok_lookup(const tokenizer *t, const char *text, size_t len) {
    uint32_t h = (uint32_t)hash_bytes(t->seed, text, len) & t->hash_mask;
    for (;; h = (h + 1) & t->hash_mask) {
        int32_t o = t->hash[h];
        if (o < 0) return -1;
        if (t->len[o] == len && memcmp(t->arena + t->off[o], text, len) == 0) return o;
    }
}

/* tp_tok_lookup of the text l followed by r, without building it. */
static int lookup_pair(const tokenizer *t, const char *l, size_t ll, const char *r, size_t rl) {
    uint32_t h = (uint32_t)hash_end(hash_more(hash_more(hash_start(t->seed), l, ll), r, rl)) & t->hash_mask;
    for (;; h = (h + 1) & t->hash_mask) {
        int32_t o = t->hash[h];
        if (o < 0) return -1;
        const char *s = t->arena + t->off[o];
        if (t->len[o] == ll + rl && memcmp(s, l, ll) == 0 && memcmp(s + ll, r, rl) == 0) return o;
    }
}

int tp_tok_valid_id(const tokenizer *t, int64_t id) {
    return id >= 0 && id < t->n_vocab ? (int)id : -1;
}

/* ---------- BPE merges ---------- */

static uint32_t merge_slot(const tokenizer *t, uint64_t key) {
    return (uint32_t)(((key ^ t->seed) * 0x9E3779B97F4A7C15ull) >> 32) & t->mmask;
}

bool tp_tok_reserve_merges(tokenizer *t, size_t n, char *err) {
    uint32_t cap = pow2_at_least(n * 2); /* n <= TP_TOK_MAX_MERGES: fits */
    free(t->mkey); free(t->mrank); free(t->mres);
    t->mkey = NULL;
    t->mrank = t->mres = NULL;
    t->mmask = 0;
    t->n_merges = 0;
    int32_t *rank = NULL, *res = NULL;
    uint64_t *key = tp_tok_alloc(cap, sizeof *key, true, t->src, "the merge table", err);
    if (!key || !(rank = tp_tok_alloc(cap, sizeof *rank, false, t->src, "the merge table", err)) ||
        !(res = tp_tok_alloc(cap, sizeof *res, false, t->src, "the merge table", err))) {
        free(key); free(rank);
        return false; /* no table: tp_tok_add_merge adds nothing, tp_tok_merge_find finds nothing */
    }
    t->mkey = key;
    t->mrank = rank;
    t->mres = res;
    t->mmask = cap - 1;
    return true;
}

void tp_tok_add_merge(tokenizer *t, const char *l, size_t ll, const char *r, size_t rl, int rank) {
    int32_t li = tp_tok_lookup(t, l, ll), ri = tp_tok_lookup(t, r, rl);
    if (li < 0 || ri < 0) return;
    if (!t->mkey || (size_t)(t->n_merges + 1) * 2 > (size_t)t->mmask + 1) return; /* reserve was too small */
    int32_t res = lookup_pair(t, l, ll, r, rl);
    uint64_t key = ((uint64_t)(uint32_t)li << 32 | (uint32_t)ri) + 1;
    for (uint32_t h = merge_slot(t, key);; h = (h + 1) & t->mmask) {
        if (t->mkey[h] == key) return; /* the first (lowest-rank) one wins */
        if (t->mkey[h] == 0) {
            t->mkey[h] = key;
            t->mrank[h] = rank;
            t->mres[h] = res;
            t->n_merges++;
            return;
        }
    }
}

bool tp_tok_add_merge_str(tokenizer *t, const char *s, size_t len, int rank) {
    const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
    if (!sp) return false;
    size_t ll = (size_t)(sp - s);
    tp_tok_add_merge(t, s, ll, sp + 1, len - ll - 1, rank);
    return true;
}

bool tp_tok_merge_find(const tokenizer *t, int32_t l, int32_t r, int32_t *rank, int32_t *res) {
    if (l < 0 || r < 0 || !t->mkey) return false;
    uint64_t key = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1;
    for (uint32_t h = merge_slot(t, key);; h = (h + 1) & t->mmask) {
        if (t->mkey[h] == key) { *rank = t->mrank[h]; *res = t->mres[h]; return true; }
        if (t->mkey[h] == 0) return false;
    }
}

/* ---------- finishing: special tokens, EOG, pieces ---------- */

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Token texts that end generation, as llama.cpp's list (plus "</s>"). */
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "<|end|>",
    "<end_of_turn>", "<EOT>", "</s>",
};

static bool build_pieces(tokenizer *t, char *err) {
    size_t cap = tp_add_sat(t->arena_len, 16), len = 0;
    if (!(t->pieces = tp_tok_alloc(cap, 1, false, t->src, "the decoded pieces", err)) ||
        !(t->poff = tp_tok_alloc((size_t)t->n_vocab, sizeof *t->poff, false, t->src, "the decoded pieces", err)) ||
        !(t->plen = tp_tok_alloc((size_t)t->n_vocab, sizeof *t->plen, false, t->src, "the decoded pieces", err)))
        return false; /* the caller frees what was allocated, with the tokenizer */
    for (int id = 0; id < t->n_vocab; id++) {
        const char *s = t->arena + t->off[id];
        uint32_t n = t->len[id];
        /* a decoded piece is never longer than the stored text, so this only guards */
        if (len + n + 1 > cap) {
            while (len + n + 1 > cap) cap = tp_mul_sat(cap, 2);
            char *p = cap < SIZE_MAX ? realloc(t->pieces, cap) : NULL;
            if (!p) return tp_tok_oom(err, t->src, cap, "the decoded pieces");
            t->pieces = p;
        }
        char *o = t->pieces + len;
        size_t m = 0;
        int ty = t->type[id];
        if (ty == TOKT_CONTROL || ty == TOKT_UNKNOWN || ty == TOKT_USER) {
            memcpy(o, s, n);
            m = n;
        } else if (ty == TOKT_NORMAL && t->kind == TOK_SPM) {
            for (uint32_t i = 0; i < n;) {
                if (i + 3 <= n && memcmp(s + i, "\xe2\x96\x81", 3) == 0) { o[m++] = ' '; i += 3; }
                else o[m++] = s[i++];
            }
        } else if (ty == TOKT_NORMAL) { /* BPE: undo the GPT-2 byte mapping */
            for (uint32_t i = 0; i < n;) {
                uint8_t c = (uint8_t)s[i];
                int k = tok_utf8_len(c);
                if (i + (uint32_t)k > n) k = 1;
                uint32_t cp = c;
                if (k == 2) cp = (uint32_t)(c & 0x1f) << 6 | ((uint8_t)s[i + 1] & 0x3f);
                int b = k <= 2 ? tp_bpe_char_byte(cp) : -1;
                if (b >= 0) o[m++] = (char)b;
                else { memcpy(o + m, s + i, (size_t)k); m += (size_t)k; } /* not a mapped char: keep */
                i += (uint32_t)k;
            }
        } else if (ty == TOKT_BYTE && t->kind == TOK_SPM) {
            unsigned v;
            if (n == 6 && sscanf(s, "<0x%2x>", &v) == 1) o[m++] = (char)v;
        }
        t->poff[id] = (uint32_t)len;
        t->plen[id] = (uint32_t)m;
        len += m;
    }
    return true;
}

bool tp_tok_finish(tokenizer *t, char *err) {
    /* eot / eom by text when the metadata has none (llama.cpp does the same) */
    if (t->eot < 0) t->eot = tp_tok_lookup(t, "<|eot_id|>", 10);
    if (t->eom < 0) t->eom = tp_tok_lookup(t, "<|eom_id|>", 10);

    for (size_t i = 0; i < sizeof eog_texts / sizeof eog_texts[0]; i++) {
        int id = tp_tok_lookup(t, eog_texts[i], strlen(eog_texts[i]));
        if (id < 0) continue;
        t->eog[id] = 1;
        /* an end-of-generation token must never show up as text */
        if (t->type[id] != TOKT_CONTROL && t->type[id] != TOKT_UNKNOWN) t->type[id] = TOKT_CONTROL;
    }
    if (t->eos >= 0) t->eog[t->eos] = 1;
    if (t->eot >= 0) t->eog[t->eot] = 1;
    if (t->eom >= 0) t->eog[t->eom] = 1;

    /* special tokens, longest text first (then by id): key = (~len << 32) | id */
    uint64_t *keys = tp_tok_alloc((size_t)t->n_vocab, sizeof *keys, false, t->src, "sorting the special tokens", err);
    if (!keys) return false;
    int ns = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        int ty = t->type[id];
        if ((ty == TOKT_CONTROL || ty == TOKT_USER || ty == TOKT_UNKNOWN) && t->len[id] > 0)
            keys[ns++] = (uint64_t)(UINT32_MAX - t->len[id]) << 32 | (uint32_t)id;
    }
    qsort(keys, (size_t)ns, sizeof *keys, cmp_u64);
    t->special = tp_tok_alloc((size_t)ns, sizeof *t->special, false, t->src, "the special tokens", err);
    if (!t->special) { free(keys); return false; }
    for (int i = 0; i < ns; i++) t->special[i] = (int32_t)(keys[i] & 0xffffffffu);
    t->n_special = ns;
    free(keys);

    for (int b = 0; b < 256; b++) {
        char buf[8];
        int n;
        if (t->kind == TOK_SPM) n = snprintf(buf, sizeof buf, "<0x%02X>", b);
        else n = tp_bpe_byte_utf8((uint8_t)b, buf);
        t->byte_tok[b] = tp_tok_lookup(t, buf, (size_t)n);
    }

    if (!build_pieces(t, err)) return false;

    if (t->kind == TOK_BPE && !tp_bpe_compile_regex(t, err)) return false;
    return true;
}

void tp_tokenizer_free(tokenizer *t) {
    if (!t) return;
    free(t->arena); free(t->off); free(t->len); free(t->score); free(t->type); free(t->eog);
    free(t->hash);
    free(t->mkey); free(t->mrank); free(t->mres);
    free(t->pieces); free(t->poff); free(t->plen);
    free(t->special);
    free(t->chat_template);
    if (t->re) pcre2_code_free(t->re);
    free(t);
}

/* ---------- queries ---------- */

tok_kind tp_tokenizer_kind(const tokenizer *t) { return t->kind; }
int tp_tokenizer_vocab_size(const tokenizer *t) { return t->n_vocab; }
int tp_tokenizer_bos(const tokenizer *t) { return t->bos; }
int tp_tokenizer_eos(const tokenizer *t) { return t->eos; }
int tp_tokenizer_eot(const tokenizer *t) { return t->eot; }
bool tp_tokenizer_adds_bos(const tokenizer *t) { return t->add_bos && t->bos >= 0; }
const char *tp_tokenizer_chat_template(const tokenizer *t) { return t->chat_template; }
bool tp_tokenizer_is_eog(const tokenizer *t, int id) { return id >= 0 && id < t->n_vocab && t->eog[id]; }

void tp_tokenizer_add_eog(tokenizer *t, int id) {
    if (id >= 0 && id < t->n_vocab) t->eog[id] = 1;
}
int tp_tokenizer_token_type(const tokenizer *t, int id) {
    return id >= 0 && id < t->n_vocab ? t->type[id] : 0;
}

const char *tp_tokenizer_token_text(const tokenizer *t, int id) {
    if (id < 0 || id >= t->n_vocab) return NULL;
    return t->arena + t->off[id];
}

int tp_tokenizer_find(const tokenizer *t, const char *text) {
    return text ? tp_tok_lookup(t, text, strlen(text)) : -1;
}

/* ---------- encoding ---------- */

typedef struct {
    int32_t tok;   /* -1: raw text [off, off+len) */
    size_t off, len;
} fragment;

/* Split the text on special-token texts, longest token first, every occurrence
 * in every remaining raw fragment (llama.cpp's tokenizer_st_partition). Control
 * and unknown tokens only count when parse_special; user-defined ones always do.
 * NULL when out of memory. */
static fragment *partition(const tokenizer *t, const char *text, size_t n, bool parse_special, int *nf) {
    int cnt = 0;
    fragment *fr = malloc(sizeof *fr);
    if (!fr) return NULL;
    if (n == 0) { *nf = 0; return fr; }
    fr[cnt++] = (fragment){ -1, 0, n };
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (!parse_special && t->type[id] != TOKT_USER) continue;
        const char *st = t->arena + t->off[id];
        size_t sl = t->len[id];
        if (sl > n || !memmem(text, n, st, sl)) continue; /* quick reject */
        fragment *nw = NULL;
        int ncap = 0, nn = 0;
        for (int i = 0; i < cnt; i++) {
            fragment f = fr[i];
            for (;;) {
                const char *m = f.tok < 0 && f.len >= sl ? memmem(text + f.off, f.len, st, sl) : NULL;
                size_t left = m ? (size_t)(m - (text + f.off)) : 0;
                int add = !m ? 1 : (left > 0) + 1;
                if (nn + add > ncap) {
                    /* a fragment covers at least one byte or is one match, so the count
                     * stays near the text's length; the growth is checked all the same */
                    size_t c = ncap ? (size_t)ncap * 2 : (size_t)cnt * 2 + 4, bytes;
                    while ((size_t)nn + (size_t)add > c) c *= 2;
                    fragment *g = c <= INT_MAX && tp_mul_size(c, sizeof *g, &bytes) ? realloc(nw, bytes) : NULL;
                    if (!g) { free(nw); free(fr); return NULL; }
                    nw = g;
                    ncap = (int)c;
                }
                if (!m) { nw[nn++] = f; break; }
                if (left > 0) nw[nn++] = (fragment){ -1, f.off, left };
                nw[nn++] = (fragment){ id, 0, 0 };
                f.off += left + sl;
                f.len -= left + sl;
                if (f.len == 0) break;
            }
        }
        free(fr);
        fr = nw;
        cnt = nn;
    }
    *nf = cnt;
    return fr;
}

int tp_tokenizer_encode(const tokenizer *t, const char *text, bool add_bos, bool parse_special,
                     int32_t *out, int cap) {
    if (!t || !text || cap < 0 || (cap > 0 && !out)) return -1;
    size_t n = strlen(text);
    tok_ivec ids = { 0 };
    int nf;
    fragment *fr = partition(t, text, n, parse_special, &nf);
    if (!fr) return TP_TOK_NOMEM;
    int rc = 0; /* 0, -1 or TP_TOK_NOMEM */

    if (add_bos && t->add_bos && t->bos >= 0 && !tp_tok_ivec_push(&ids, t->bos)) rc = TP_TOK_NOMEM;

    char *esc = NULL;
    size_t esc_cap = 0;
    bool prev_special = true; /* SPM: a fragment at the start or after a special token gets "▁" */
    for (int i = 0; i < nf && rc == 0; i++) {
        if (fr[i].tok >= 0) {
            if (!tp_tok_ivec_push(&ids, fr[i].tok)) rc = TP_TOK_NOMEM;
            prev_special = true;
            continue;
        }
        const char *s = text + fr[i].off;
        size_t len = fr[i].len;
        if (t->kind == TOK_BPE) {
            rc = tp_bpe_encode(t, s, len, &ids);
            continue;
        }
        /* SPM: optional space prefix, then every space becomes U+2581 "▁" */
        size_t need;
        if (!tp_muladd_size(len, 3, 3, &need)) { rc = TP_TOK_NOMEM; break; }
        if (need > esc_cap) {
            char *e = realloc(esc, need);
            if (!e) { rc = TP_TOK_NOMEM; break; }
            esc = e;
            esc_cap = need;
        }
        size_t m = 0;
        if (t->add_space_prefix && prev_special) { memcpy(esc, "\xe2\x96\x81", 3); m = 3; }
        for (size_t j = 0; j < len; j++) {
            if (s[j] == ' ') { memcpy(esc + m, "\xe2\x96\x81", 3); m += 3; }
            else esc[m++] = s[j];
        }
        rc = tp_spm_encode(t, esc, m, &ids);
        prev_special = false;
    }
    free(esc);
    free(fr);

    if (rc == 0 && add_bos && t->add_eos && t->eos >= 0 && !tp_tok_ivec_push(&ids, t->eos)) rc = TP_TOK_NOMEM;

    bool ok = rc == 0;
    int result = ok ? ids.n : rc;
    if (ok && cap > 0 && ids.n > 0) memcpy(out, ids.v, (size_t)(ids.n < cap ? ids.n : cap) * sizeof *out);
    free(ids.v);
    return result;
}

/* ---------- decoding ---------- */

static bool hidden(const tokenizer *t, int id, bool show_special) {
    return !show_special && (t->type[id] == TOKT_CONTROL || t->type[id] == TOKT_UNKNOWN);
}

int tp_tokenizer_piece(const tokenizer *t, int id, bool show_special, char *buf, int cap) {
    if (!t || id < 0 || id >= t->n_vocab || hidden(t, id, show_special)) return 0;
    int n = (int)t->plen[id];
    if (n > cap) return -n;
    memcpy(buf, t->pieces + t->poff[id], (size_t)n);
    return n;
}

char *tp_tokenizer_decode_special(const tokenizer *t, const int32_t *ids, int n, bool show_special) {
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < t->n_vocab && !hidden(t, ids[i], show_special)) total += t->plen[ids[i]];
    char *s = malloc(total + 1), *o = s;
    if (!s) return NULL; /* the callers report it (tempo_detokenize returns NULL) */
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_vocab || hidden(t, id, show_special)) continue;
        memcpy(o, t->pieces + t->poff[id], t->plen[id]);
        o += t->plen[id];
    }
    *o = 0;
    return s;
}

char *tp_tokenizer_decode(const tokenizer *t, const int32_t *ids, int n) {
    return tp_tokenizer_decode_special(t, ids, n, false);
}

/* ---------- GGUF ---------- */

static bool read_id(const gguf_file *f, tokenizer *t, const char *key, int *out, char *err) {
    int64_t v;
    char e2[TP_ERR_LEN];
    if (tp_gguf_get_int(f, key, &v, e2)) { *out = tp_tok_valid_id(t, v); return true; }
    if (e2[0]) return tp_fail(err, "%s: %s", t->src, e2), false;
    return true; /* absent: keep the default */
}

static bool read_flag(const gguf_file *f, tokenizer *t, const char *key, bool *out, char *err) {
    char e2[TP_ERR_LEN];
    bool v;
    if (tp_gguf_get_bool(f, key, &v, e2)) { *out = v; return true; }
    if (e2[0]) return tp_fail(err, "%s: %s", t->src, e2), false;
    return true;
}

/* tokenizer.chat_template: kept as text for src/chat (the model's chat format). */
static bool read_chat_template(const gguf_file *f, tokenizer *t, char *err) {
    static const char key[] = "tokenizer.chat_template";
    const gguf_kv *kv = tp_gguf_find(f, key);
    if (!kv) return true;
    if (kv->value.type != GGUF_STRING) return tp_fail(err, "%s: %s is not a string", t->src, key), false;
    /* copied here rather than with tp_gguf_get_string, so that running out of memory
     * is this load's error rather than a template silently missing */
    gguf_str v = kv->value.v.s;
    size_t n = (size_t)v.len;
    if ((uint64_t)n != v.len || n == SIZE_MAX) return tp_tok_oom(err, t->src, SIZE_MAX, "the chat template");
    if (!(t->chat_template = tp_tok_alloc(n + 1, 1, false, t->src, "the chat template", err))) return false;
    if (n) memcpy(t->chat_template, v.str, n);
    t->chat_template[n] = 0;
    return true;
}

static const gguf_value *find_array(const gguf_file *f, const char *path, const char *key, bool numeric,
                                    uint64_t want, bool required, bool *bad, char *err) {
    const gguf_kv *kv = tp_gguf_find(f, key);
    *bad = false;
    if (!kv) {
        if (required) { *bad = true; tp_fail(err, "%s: %s missing", path, key); }
        return NULL;
    }
    const gguf_value *v = &kv->value;
    uint32_t et = v->v.arr.elem_type;
    bool ok = v->type == GGUF_ARRAY &&
              (numeric ? et <= GGUF_I64 && et != GGUF_BOOL && et != GGUF_STRING && et != GGUF_ARRAY
                       : et == GGUF_STRING);
    if (!ok) {
        *bad = true;
        tp_fail(err, "%s: %s is not %s array", path, key, numeric ? "a numeric" : "a string");
        return NULL;
    }
    if (want && v->v.arr.count != want) {
        *bad = true;
        tp_fail(err, "%s: %s has %llu entries, expected %llu (one per token)", path, key,
                (unsigned long long)v->v.arr.count, (unsigned long long)want);
        return NULL;
    }
    return v;
}

tokenizer *tp_tokenizer_from_gguf(const struct gguf_file *f, char *err) {
    return tp_tokenizer_from_gguf_ex(f, 0, NULL, err);
}

tokenizer *tp_tokenizer_from_gguf_ex(const struct gguf_file *f, int max_vocab, tp_ledger *led, char *err) {
    const char *path = f && f->path ? f->path : "gguf";
    if (!f) return tp_fail(err, "tokenizer: no GGUF file"), NULL;
    char name[64];
    if (tp_gguf_get_str(f, "tokenizer.ggml.model", name, sizeof name) < 0)
        return tp_fail(err, "%s: tokenizer.ggml.model missing", path), NULL;
    tok_kind kind;
    if (tp_gguf_str_is(f, "tokenizer.ggml.model", "llama")) kind = TOK_SPM;
    else if (tp_gguf_str_is(f, "tokenizer.ggml.model", "gpt2")) kind = TOK_BPE;
    else return tp_fail(err, "%s: tokenizer.ggml.model '%s' not supported (llama or gpt2)", path, name), NULL;

    if (kind == TOK_BPE) {
        const char *key = "tokenizer.ggml.pre";
        bool ok = tp_gguf_str_is(f, key, "llama-bpe") || tp_gguf_str_is(f, key, "llama3") ||
                  tp_gguf_str_is(f, key, "llama-v3");
        if (!ok) {
            bool has = tp_gguf_get_str(f, key, name, sizeof name) >= 0;
            return tp_fail(err, "%s: tokenizer.ggml.pre '%s' not supported for gpt2 (llama-bpe or llama3)", path,
                           has ? name : "(missing)"), NULL;
        }
    }

    bool bad;
    const gguf_value *toks = find_array(f, path, "tokenizer.ggml.tokens", false, 0, true, &bad, err);
    if (!toks) return NULL;
    uint64_t n = toks->v.arr.count;
    if (n == 0 || n > TP_TOK_MAX_TOKENS) return tp_fail(err, "%s: tokenizer.ggml.tokens has %llu entries", path,
                                                        (unsigned long long)n), NULL;
    /* the vocabulary indexes the embedding: more tokens than rows is an error
     * before anything is sized by the count */
    if (max_vocab > 0 && n > (uint64_t)max_vocab)
        return tp_fail(err, "%s: tokenizer has %llu tokens but token_embd.weight has %d rows", path,
                       (unsigned long long)n, max_vocab), NULL;
    const gguf_value *scores = find_array(f, path, "tokenizer.ggml.scores", true, n, false, &bad, err);
    if (bad) return NULL;
    const gguf_value *types = find_array(f, path, "tokenizer.ggml.token_type", true, n, false, &bad, err);
    if (bad) return NULL;
    const gguf_value *merges = NULL;
    if (kind == TOK_BPE) {
        merges = find_array(f, path, "tokenizer.ggml.merges", false, 0, true, &bad, err);
        if (!merges) return NULL;
    }

    size_t text_bytes = 0;
    for (uint64_t i = 0; i < n; i++) text_bytes = tp_add_sat(text_bytes, (size_t)tp_gguf_arr_str(toks, i).len);
    uint64_t nm = merges ? merges->v.arr.count : 0;
    if (text_bytes > TP_TOK_MAX_TEXT || nm > TP_TOK_MAX_MERGES)
        return tp_fail(err, "%s: tokenizer of %llu bytes of text and %llu merges is larger than tempo reads (%zu, %d)",
                       path, (unsigned long long)text_bytes, (unsigned long long)nm, TP_TOK_MAX_TEXT,
                       TP_TOK_MAX_MERGES), NULL;
    char label[TP_ERR_LEN / 2];
    snprintf(label, sizeof label, "%.200s: the tokenizer", path);
    if (tp_ledger_charge(led, tp_tok_build_bytes((size_t)n, text_bytes, (size_t)nm), label, err)) return NULL;
    tokenizer *t = tp_tok_new(kind, (int)n, text_bytes, path, err);
    if (!t) return NULL;
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s = tp_gguf_arr_str(toks, i);
        float sc = scores ? (float)tp_gguf_arr_float(scores, i) : 0.0f;
        int ty = types ? (int)tp_gguf_arr_int(types, i) : TOKT_NORMAL;
        if (!tp_tok_set_token(t, (int)i, s.str ? s.str : "", (size_t)s.len, sc, ty, err)) {
            tp_tokenizer_free(t);
            return NULL;
        }
    }
    if (!tp_tok_index(t, err)) { tp_tokenizer_free(t); return NULL; }

    if (kind == TOK_SPM) {
        /* llama.cpp's defaults for SentencePiece vocabularies */
        t->bos = tp_tok_valid_id(t, 1);
        t->eos = tp_tok_valid_id(t, 2);
        t->unk = tp_tok_valid_id(t, 0);
        t->add_bos = true;
        t->add_space_prefix = true;
    } else {
        t->add_bos = true; /* Llama 3 */
        t->ignore_merges = true;
        if (!tp_tok_reserve_merges(t, (size_t)nm, err)) { tp_tokenizer_free(t); return NULL; }
        for (uint64_t i = 0; i < nm; i++) {
            gguf_str s = tp_gguf_arr_str(merges, i);
            if (!s.str || !tp_tok_add_merge_str(t, s.str, (size_t)s.len, (int)i)) {
                tp_fail(err, "%s: tokenizer.ggml.merges[%llu] is not \"left right\"", path,
                        (unsigned long long)i);
                tp_tokenizer_free(t);
                return NULL;
            }
        }
    }

    bool ok = read_id(f, t, "tokenizer.ggml.bos_token_id", &t->bos, err) &&
              read_id(f, t, "tokenizer.ggml.eos_token_id", &t->eos, err) &&
              read_id(f, t, "tokenizer.ggml.unknown_token_id", &t->unk, err) &&
              read_id(f, t, "tokenizer.ggml.eot_token_id", &t->eot, err) &&
              read_id(f, t, "tokenizer.ggml.eom_token_id", &t->eom, err) &&
              read_flag(f, t, "tokenizer.ggml.add_bos_token", &t->add_bos, err) &&
              read_flag(f, t, "tokenizer.ggml.add_eos_token", &t->add_eos, err) &&
              (kind != TOK_SPM || read_flag(f, t, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err)) &&
              read_chat_template(f, t, err) &&
              tp_tok_finish(t, err);
    if (!ok) { tp_tokenizer_free(t); return NULL; }
    return t;
}
