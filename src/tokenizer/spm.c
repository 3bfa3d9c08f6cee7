/* spm.c: SentencePiece-style ("llama") encoding of one raw-text fragment, as
 * llama.cpp's llm_tokenizer_spm: start from UTF-8 characters, repeatedly merge the
 * adjacent pair whose concatenation is a vocabulary token with the highest score
 * (ties to the leftmost pair), then emit each remaining piece as its token or, when
 * it is not in the vocabulary, as <0xNN> byte-fallback tokens.
 */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>

#include "core/checked.h"

/* false when the queue cannot grow */
static bool try_pair(const tokenizer *t, const tok_symbol *sym, tok_heap *h, int l, int r) {
    if (l < 0 || r < 0) return true;
    int size = sym[l].n + sym[r].n;
    int id = tp_tok_lookup(t, sym[l].text, (size_t)size); /* the two are adjacent in the text */
    if (id < 0) return true;
    tok_bigram b = { .key = -(double)t->score[id], .left = l, .right = r, .size = size };
    return tp_tok_heap_push(h, b);
}

int tp_spm_encode(const tokenizer *t, const char *text, size_t len, tok_ivec *out) {
    if (len == 0) return 0;
    size_t bytes;
    tok_symbol *sym = tp_mul_size(len, sizeof *sym, &bytes) ? malloc(bytes) : NULL;
    if (!sym) return TP_TOK_NOMEM;
    int ns = 0;
    for (size_t off = 0; off < len;) {
        size_t k = (size_t)tok_utf8_len((uint8_t)text[off]);
        if (k > len - off) k = len - off;
        sym[ns] = (tok_symbol){ .text = text + off, .n = (int)k, .prev = ns - 1, .next = ns + 1, .id = -1 };
        ns++;
        off += k;
    }
    sym[ns - 1].next = -1;

    tok_heap h = { 0 };
    bool ok = true;
    for (int i = 1; i < ns && ok; i++) ok = try_pair(t, sym, &h, i - 1, i);
    while (ok && h.n > 0) {
        tok_bigram b = tp_tok_heap_pop(&h);
        tok_symbol *l = &sym[b.left], *r = &sym[b.right];
        /* stale: one side was merged away or grew since this pair was queued */
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        ok = try_pair(t, sym, &h, l->prev, b.left) && try_pair(t, sym, &h, b.left, l->next);
    }
    free(h.v);

    for (int i = 0; ok && i != -1; i = sym[i].next) {
        int id = tp_tok_lookup(t, sym[i].text, (size_t)sym[i].n);
        if (id >= 0) { ok = tp_tok_ivec_push(out, id); continue; }
        for (int j = 0; ok && j < sym[i].n; j++) {
            int b = t->byte_tok[(uint8_t)sym[i].text[j]];
            if (b < 0) b = t->unk;
            if (b >= 0) ok = tp_tok_ivec_push(out, b);
        }
    }
    free(sym);
    return ok ? 0 : TP_TOK_NOMEM;
}
