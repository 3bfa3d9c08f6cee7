/* bpe.c: byte-level BPE ("gpt2" model, Llama 3 pre-tokenizer), as llama.cpp's
 * llm_tokenizer_bpe: split the text with the Llama 3 regex (PCRE2, Unicode), map
 * each pre-token's bytes to GPT-2's printable characters, emit the whole pre-token
 * when it is itself a token (ignore_merges), else start from one symbol per byte
 * and apply the lowest-rank merge (ties to the leftmost pair) until none applies.
 */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/common.h"

/* ---------- GPT-2 byte <-> character mapping ----------
 * Printable bytes (33..126, 161..172, 174..255) stand for themselves; the other 68
 * bytes are given the characters U+0100.. in byte order (0..32, 127..160, 173). */

static uint32_t byte_cp(uint8_t b) {
    if (b <= 32) return 256u + b;
    if (b >= 127 && b <= 160) return (uint32_t)b + 162u; /* 256 + 33 + (b - 127) */
    if (b == 173) return 323;
    return b;
}

int tp_bpe_byte_utf8(uint8_t b, char out[2]) {
    uint32_t cp = byte_cp(b);
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

int tp_bpe_char_byte(uint32_t cp) {
    if (cp >= 256 && cp <= 288) return (int)(cp - 256);
    if (cp >= 289 && cp <= 322) return (int)(cp - 162);
    if (cp == 323) return 173;
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    return -1;
}

/* ---------- the split regex ---------- */

/* As it appears in Llama 3's tokenizer.json (used to recognise it there). */
const char tp_bpe_llama3_hf_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* What we compile: the same regex with two spellings pinned down so that the
 * result does not depend on the PCRE2 version: the contractions are matched
 * case-insensitively in ASCII only (as llama.cpp; PCRE2's Unicode caseless mode
 * would also take e.g. U+017F for 's'), and \s is the Unicode White_Space set. */
#define WS "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static const char llama3_regex[] =
    "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]"
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
    "|\\p{N}{1,3}"
    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*"
    "|[" WS "]*[\\r\\n]+"
    "|[" WS "]+(?![^" WS "])"
    "|[" WS "]+";

bool tp_bpe_compile_regex(tokenizer *t, char *err) {
    int ec;
    PCRE2_SIZE eo;
    t->re = pcre2_compile((PCRE2_SPTR)llama3_regex, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return tp_fail(err, "%s: cannot compile the pre-tokenizer regex at %zu: %s", t->src, (size_t)eo,
                       (const char *)msg), false;
    }
    pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* optional speed-up; the interpreter works too */
    return true;
}

/* ---------- UTF-8 clean-up ----------
 * llama.cpp turns each byte that does not start a well-formed sequence into
 * U+FFFD before splitting; PCRE2 needs valid UTF-8 anyway. Returns the length
 * of the valid sequence at s, or 0 (with *skip = bytes to replace) if invalid. */
static int utf8_valid(const uint8_t *s, size_t n, int *skip) {
    uint8_t c = s[0];
    *skip = 1;
    if (c < 0x80) return 1;
    int k = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
    if (k == 0 || c > 0xF7 || (size_t)k > n) return 0;
    for (int i = 1; i < k; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    *skip = k; /* well-formed shape: one replacement for the whole sequence */
    uint32_t cp = k == 2 ? (uint32_t)(c & 0x1F) << 6 | (s[1] & 0x3F)
                : k == 3 ? (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F)
                         : (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
                               (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    static const uint32_t min_cp[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (cp < min_cp[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return k;
}

/* *out NULL when text is valid UTF-8; else a cleaned copy (*out_len bytes).
 * false when out of memory. */
static bool utf8_clean(const char *text, size_t len, char **out, size_t *out_len) {
    size_t i = 0;
    int skip;
    *out = NULL;
    while (i < len) {
        int k = utf8_valid((const uint8_t *)text + i, len - i, &skip);
        if (!k) break;
        i += (size_t)k;
    }
    if (i == len) return true;
    size_t bytes; /* each invalid byte becomes the 3 of U+FFFD */
    char *o = tp_muladd_size(len, 3, 1, &bytes) ? malloc(bytes) : NULL;
    if (!o) return false;
    memcpy(o, text, i);
    size_t m = i;
    while (i < len) {
        int k = utf8_valid((const uint8_t *)text + i, len - i, &skip);
        if (k) { memcpy(o + m, text + i, (size_t)k); m += (size_t)k; i += (size_t)k; }
        else { memcpy(o + m, "\xEF\xBF\xBD", 3); m += 3; i += (size_t)skip; }
    }
    *out = o;
    *out_len = m;
    return true;
}

/* ---------- merging one pre-token ---------- */

typedef struct {
    char *mapped;
    size_t mapped_cap;
    tok_symbol *sym;
    size_t sym_cap;
    tok_heap heap;
} bpe_scratch;

/* false when the queue cannot grow */
static bool try_pair(const tokenizer *t, bpe_scratch *w, int l, int r) {
    if (l < 0 || r < 0) return true;
    int32_t rank, res;
    if (!tp_tok_merge_find(t, w->sym[l].id, w->sym[r].id, &rank, &res)) return true;
    tok_bigram b = { .key = rank, .left = l, .right = r, .lid = w->sym[l].id, .rid = w->sym[r].id };
    return tp_tok_heap_push(&w->heap, b);
}

/* 0, or TP_TOK_NOMEM. The scratch buffers grow to the longest pre-token and are
 * reused for the rest of the text; when one cannot grow, the old one stays in w for
 * tp_bpe_encode to free. */
static int encode_word(const tokenizer *t, bpe_scratch *w, const uint8_t *s, size_t n, tok_ivec *out) {
    if (n == 0) return 0;
    if (t->ignore_merges) {
        size_t need = tp_mul_sat(n, 2); /* each byte maps to a character of 1 or 2 bytes */
        if (need > w->mapped_cap) {
            char *p = need < SIZE_MAX ? realloc(w->mapped, need) : NULL;
            if (!p) return TP_TOK_NOMEM;
            w->mapped = p;
            w->mapped_cap = need;
        }
        size_t m = 0;
        for (size_t i = 0; i < n; i++) m += (size_t)tp_bpe_byte_utf8(s[i], w->mapped + m);
        int id = tp_tok_lookup(t, w->mapped, m);
        if (id >= 0) return tp_tok_ivec_push(out, id) ? 0 : TP_TOK_NOMEM;
    }
    if (n > w->sym_cap) {
        size_t bytes;
        tok_symbol *p = tp_mul_size(n, sizeof *p, &bytes) ? realloc(w->sym, bytes) : NULL;
        if (!p) return TP_TOK_NOMEM;
        w->sym = p;
        w->sym_cap = n;
    }
    tok_symbol *sym = w->sym;
    for (size_t i = 0; i < n; i++)
        sym[i] = (tok_symbol){ .n = 1, .prev = (int)i - 1, .next = i + 1 < n ? (int)i + 1 : -1,
                               .id = t->byte_tok[s[i]] };
    w->heap.n = 0;
    bool ok = true;
    for (size_t i = 1; i < n && ok; i++) ok = try_pair(t, w, (int)i - 1, (int)i);
    while (ok && w->heap.n > 0) {
        tok_bigram b = tp_tok_heap_pop(&w->heap);
        tok_symbol *l = &sym[b.left], *r = &sym[b.right];
        /* stale: a side was merged away or has changed since the pair was queued */
        if (l->n == 0 || r->n == 0 || l->id != b.lid || r->id != b.rid) continue;
        int32_t rank, res;
        tp_tok_merge_find(t, l->id, r->id, &rank, &res);
        l->id = res;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        ok = try_pair(t, w, l->prev, b.left) && try_pair(t, w, b.left, l->next);
    }
    /* a piece that is no token (only with an incomplete vocabulary) is dropped, as llama.cpp */
    for (int i = 0; ok && i != -1; i = sym[i].next)
        if (sym[i].id >= 0) ok = tp_tok_ivec_push(out, sym[i].id);
    return ok ? 0 : TP_TOK_NOMEM;
}

int tp_bpe_encode(const tokenizer *t, const char *text, size_t len, tok_ivec *out) {
    size_t clen;
    char *clean;
    if (!utf8_clean(text, len, &clean, &clen)) return TP_TOK_NOMEM;
    if (clean) { text = clean; len = clen; }
    const uint8_t *s = (const uint8_t *)text;

    /* PCRE2 allocates the match data with its own malloc: NULL is out of memory */
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!md) { free(clean); return TP_TOK_NOMEM; }
    bpe_scratch w = { 0 };
    int err = 0;
    size_t pos = 0, gap = 0; /* text not covered by any match since `gap` is a pre-token too */
    while (pos < len) {
        int rc = pcre2_match(t->re, s, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) { err = rc == PCRE2_ERROR_NOMEMORY ? TP_TOK_NOMEM : -1; break; }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] <= ov[0]) { /* empty match (the Llama 3 regex has none): step one character */
            if (ov[0] >= len) break;
            pos = ov[0] + (size_t)tok_utf8_len(s[ov[0]]);
            continue;
        }
        if (ov[0] > gap && (err = encode_word(t, &w, s + gap, ov[0] - gap, out))) break;
        if ((err = encode_word(t, &w, s + ov[0], ov[1] - ov[0], out))) break;
        pos = gap = ov[1];
    }
    if (!err && len > gap) err = encode_word(t, &w, s + gap, len - gap, out);
    pcre2_match_data_free(md);
    free(w.mapped);
    free(w.sym);
    free(w.heap.v);
    free(clean);
    return err;
}
