/* hf_json.c: the Llama 3 byte-level BPE tokenizer from a Hugging Face folder:
 * tokenizer.json (model.vocab, model.merges in "a b" or ["a", "b"] form,
 * model.ignore_merges, added_tokens, the pre-tokenizer and decoder) and the
 * optional tokenizer_config.json (bos_token, eos_token, add_bos_token,
 * add_eos_token, chat_template) and chat_template.jinja. The result is the same tokenizer tp_tokenizer_from_gguf builds
 * from llama.cpp's conversion of these files.
 *
 * tokenizer.json is untrusted and can be large (Llama 3's is 9 MB; a hostile
 * one any size), so it is not turned into a cJSON tree (about 5x its size for a
 * real file, 40x for a crafted one). One streaming pass (format/json.h)
 * validates the whole document and notes where model.vocab, model.merges and
 * added_tokens are; the small sections (normalizer, pre_tokenizer, decoder,
 * post_processor, at most 1 MB each) go through cJSON. The vocabulary is then
 * read twice in place: once to count its entries, their text and the largest
 * id, which must be below the model's embedding rows (or, with no model, leave
 * no more gaps than there are entries) -- so nothing is ever sized by an id
 * the file merely claims -- and once to take the texts. Everything allocated is
 * charged to the ledger first. As cJSON does, the first of duplicate keys wins.
 */
#include "tokenizer/tok_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/checked.h"
#include "core/common.h"
#include "format/json.h"

static const char *str_item(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* tokenizer_config.json's bos_token / eos_token: a string or {"content": "..."} */
static const char *token_content(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) return str_item(v, "content");
    return NULL;
}

/* Llama 3: Sequence [Split(llama3 regex, Isolated), ByteLevel(use_regex false)] */
static bool is_llama3_pretok(const cJSON *pt) {
    const char *ty = str_item(pt, "type");
    if (!ty || strcmp(ty, "Sequence") != 0) return false;
    const cJSON *seq = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers");
    if (!cJSON_IsArray(seq) || cJSON_GetArraySize(seq) != 2) return false;
    const cJSON *sp = cJSON_GetArrayItem(seq, 0), *bl = cJSON_GetArrayItem(seq, 1);
    const char *t0 = str_item(sp, "type"), *t1 = str_item(bl, "type");
    if (!t0 || !t1 || strcmp(t0, "Split") != 0 || strcmp(t1, "ByteLevel") != 0) return false;
    const char *re = str_item(cJSON_GetObjectItemCaseSensitive(sp, "pattern"), "Regex");
    const char *beh = str_item(sp, "behavior");
    if (!re || strcmp(re, tp_bpe_llama3_hf_regex) != 0 || !beh || strcmp(beh, "Isolated") != 0) return false;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sp, "invert"))) return false;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bl, "use_regex"))) return false;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bl, "add_prefix_space"))) return false;
    return true;
}

/* The TemplateProcessing post-processor, alone or inside a Sequence (Llama 3.1). */
static const cJSON *find_template(const cJSON *pp) {
    const char *ty = str_item(pp, "type");
    if (!ty) return NULL;
    if (strcmp(ty, "TemplateProcessing") == 0) return pp;
    if (strcmp(ty, "Sequence") != 0) return NULL;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(pp, "processors")) {
        const cJSON *t = find_template(e);
        if (t) return t;
    }
    return NULL;
}

/* The template's "single": the id of a SpecialToken at its start (first) or end. */
static const char *template_special(const cJSON *tp, bool first) {
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(tp, "single");
    int n = cJSON_GetArraySize(single);
    if (!cJSON_IsArray(single) || n == 0) return NULL;
    const cJSON *e = cJSON_GetArrayItem(single, first ? 0 : n - 1);
    return str_item(cJSON_GetObjectItemCaseSensitive(e, "SpecialToken"), "id");
}

/* added tokens that look like "<|...|>" are control tokens even when not marked
 * special (as llama.cpp's converter treats them) */
static bool looks_special(const char *s, size_t n) {
    return n >= 4 && memcmp(s, "<|", 2) == 0 && memcmp(s + n - 2, "|>", 2) == 0;
}


/* tokenizer.json may be this large (the largest published is about 35 MB). */
#define HF_MAX_TOKENIZER_JSON ((size_t)512 << 20)
/* tokenizer_config.json (Gemma's, with thousands of added tokens, is 1.2 MB). */
#define HF_MAX_TOKENIZER_CONFIG ((size_t)64 << 20)
/* A chat template (tokenizer_config.json's chat_template, or chat_template.jinja): real ones are
 * a few to tens of KB; 1 MiB bounds what a file can make us hold. */
#define HF_MAX_CHAT_TEMPLATE ((size_t)1 << 20)
/* Each small section parsed with cJSON (real ones are a few KB). */
#define HF_MAX_SECTION ((size_t)1 << 20)

enum { SEC_NORMALIZER, SEC_PRE_TOKENIZER, SEC_DECODER, SEC_POST_PROCESSOR, N_SEC };
static const char *const sec_names[N_SEC] = { "normalizer", "pre_tokenizer", "decoder", "post_processor" };

typedef struct {
    char *b, *e; /* the value's text */
    bool set;
} span;

typedef struct {
    const char *path;
    char *err;
    tp_ledger *led;
    size_t sec_charged;       /* cJSON trees of the sections */
    bool model_obj;           /* "model" is an object */
    const char *model_type;   /* model.type when a string */
    bool byte_fallback, ignore_merges;
    span vocab, merges, added;
    cJSON *sec[N_SEC];
    bool sec_seen[N_SEC];
} hfdoc;

/* Per-id texts while building (pointers into the file buffer). */
typedef struct {
    const char **text;
    uint32_t *len;
    uint8_t *type;
} idtab;

typedef struct {
    size_t entries, text_bytes;
    int64_t max_id;
} vstat;

static bool key_is(const char *k, size_t kl, const char *lit) { return kl == strlen(lit) && memcmp(k, lit, kl) == 0; }

/* A key or string as written, for a message: at most 40 bytes, non-printables as '?'. */
static void excerpt(const char *s, size_t n, char out[48]) {
    size_t k = n < 40 ? n : 40;
    for (size_t i = 0; i < k; i++) out[i] = s[i] >= 32 && s[i] < 127 ? s[i] : '?';
    if (n > 40) { memcpy(out + 40, "...", 3); k = 43; }
    out[k] = 0;
}

static bool scan_failed(hfdoc *d, const tp_jscan *s) {
    tp_js_error(s, d->path, d->err);
    return false;
}

/* cJSON_IsTrue's reading of a value: true only for the literal true. */
static bool read_flag(tp_jscan *s, bool *out) {
    int c = tp_js_peek(s);
    if (c == 't' || c == 'f') return tp_js_bool(s, out);
    *out = false;
    return tp_js_skip(s);
}

/* An integer id in [0, 2^30) (as the JSON number at the cursor); false when
 * the value is something else (the cursor is then past it). */
static bool read_id(tp_jscan *s, int64_t *id, bool *ok) {
    int c = tp_js_peek(s);
    *ok = false;
    if (c != '-' && (c < '0' || c > '9')) return tp_js_skip(s);
    double d;
    if (!tp_js_number(s, &d)) return false;
    if (d >= 0 && d < (double)TP_TOK_MAX_TOKENS && d == floor(d)) { *id = (int64_t)d; *ok = true; }
    return true;
}

static bool read_model(hfdoc *d, tp_jscan *s) {
    bool more, seen[5] = { 0 };
    if (!tp_js_open(s, '{', &more)) return false;
    while (more) {
        char *k;
        size_t kl;
        if (!tp_js_key(s, &k, &kl)) return false;
        int c = tp_js_peek(s);
        bool ok = true;
        if (key_is(k, kl, "type") && !seen[0]) {
            seen[0] = true;
            char *v;
            if (c == '"') { ok = tp_js_string(s, &v, NULL); d->model_type = v; }
            else ok = tp_js_skip(s);
        } else if (key_is(k, kl, "byte_fallback") && !seen[1]) {
            seen[1] = true;
            ok = read_flag(s, &d->byte_fallback);
        } else if (key_is(k, kl, "ignore_merges") && !seen[2]) {
            seen[2] = true;
            ok = read_flag(s, &d->ignore_merges);
        } else if (key_is(k, kl, "vocab") && !seen[3]) {
            seen[3] = true;
            d->vocab.set = c == '{';
            ok = tp_js_skip_span(s, &d->vocab.b, &d->vocab.e);
        } else if (key_is(k, kl, "merges") && !seen[4]) {
            seen[4] = true;
            d->merges.set = c == '[';
            ok = tp_js_skip_span(s, &d->merges.b, &d->merges.e);
        } else {
            ok = tp_js_skip(s);
        }
        if (!ok || !tp_js_next(s, '}', &more)) return false;
    }
    return true;
}

/* One small section through cJSON: its text is capped and its tree charged. */
static bool read_section(hfdoc *d, int i, char *b, char *e) {
    size_t n = (size_t)(e - b);
    if (n > HF_MAX_SECTION)
        return tp_fail(d->err, "%s: %s is %zu bytes of JSON (at most %zu)", d->path, sec_names[i], n,
                       HF_MAX_SECTION), false;
    char what[TP_ERR_LEN / 2];
    snprintf(what, sizeof what, "%.200s: %s", d->path, sec_names[i]);
    size_t ch = 0;
    d->sec[i] = tp_json_parse(what, b, n, d->led, &ch, d->err);
    d->sec_charged += ch;
    return d->sec[i] != NULL;
}

/* The one streaming pass over the whole document. */
static bool read_top(hfdoc *d, char *buf, size_t len) {
    tp_jscan s;
    tp_js_init(&s, buf, len);
    if (tp_js_peek(&s) != '{') {
        if (!tp_js_skip(&s) || !tp_js_finish(&s)) return scan_failed(d, &s);
        return tp_fail(d->err, "%s: not a JSON object", d->path), false;
    }
    bool more, seen_model = false, seen_added = false;
    if (!tp_js_open(&s, '{', &more)) return scan_failed(d, &s);
    while (more) {
        char *k;
        size_t kl;
        if (!tp_js_key(&s, &k, &kl)) return scan_failed(d, &s);
        int c = tp_js_peek(&s);
        bool ok = true;
        int sec = -1;
        for (int i = 0; i < N_SEC; i++)
            if (key_is(k, kl, sec_names[i]) && !d->sec_seen[i]) sec = i;
        if (key_is(k, kl, "model") && !seen_model) {
            seen_model = true;
            d->model_obj = c == '{';
            ok = c == '{' ? read_model(d, &s) : tp_js_skip(&s);
        } else if (key_is(k, kl, "added_tokens") && !seen_added) {
            seen_added = true;
            if (c != '[' && c != 'n') return tp_fail(d->err, "%s: added_tokens is not an array", d->path), false;
            d->added.set = c == '[';
            ok = tp_js_skip_span(&s, &d->added.b, &d->added.e);
        } else if (sec >= 0) {
            char *b, *e;
            d->sec_seen[sec] = true;
            if (!tp_js_skip_span(&s, &b, &e)) return scan_failed(d, &s);
            if (!read_section(d, sec, b, e)) return false;
        } else {
            ok = tp_js_skip(&s);
        }
        if (!ok || !tp_js_next(&s, '}', &more)) return scan_failed(d, &s);
    }
    if (!tp_js_finish(&s)) return scan_failed(d, &s);
    return true;
}

/* model.vocab: {"text": id, ...}. Without tab: count and check (the text is
 * left escaped, so that the second pass can read it); with tab: take the texts. */
static bool vocab_pass(hfdoc *d, int64_t limit, idtab *tab, vstat *st) {
    tp_jscan s;
    tp_js_init(&s, d->vocab.b, (size_t)(d->vocab.e - d->vocab.b));
    bool more;
    if (!tp_js_open(&s, '{', &more)) return scan_failed(d, &s);
    while (more) {
        char *k;
        size_t kl;
        bool ok;
        int64_t id = -1;
        if (!(tab ? tp_js_key(&s, &k, &kl) : tp_js_key_raw(&s, &k, &kl)) || !read_id(&s, &id, &ok))
            return scan_failed(d, &s);
        char ex[48];
        if (!ok) {
            excerpt(k, kl, ex);
            return tp_fail(d->err, "%s: model.vocab[\"%s\"] is not a token id", d->path, ex), false;
        }
        if (limit > 0 && id >= limit) {
            excerpt(k, kl, ex);
            return tp_fail(d->err, "%s: model.vocab[\"%s\"] = %lld is not below the vocabulary size %lld (the "
                                   "model's embedding rows)", d->path, ex, (long long)id, (long long)limit), false;
        }
        if (tab) {
            tab->text[id] = k;
            tab->len[id] = (uint32_t)kl;
            tab->type[id] = TOKT_NORMAL;
        }
        st->entries++;
        st->text_bytes += kl;
        if (id > st->max_id) st->max_id = id;
        if (!tp_js_next(&s, '}', &more)) return scan_failed(d, &s);
    }
    return true;
}

/* added_tokens: [{"id": n, "content": "...", "special": bool, ...}, ...]; the same two passes. */
static bool added_pass(hfdoc *d, int64_t limit, idtab *tab, vstat *st) {
    if (!d->added.set) return true;
    tp_jscan s;
    tp_js_init(&s, d->added.b, (size_t)(d->added.e - d->added.b));
    bool more;
    if (!tp_js_open(&s, '[', &more)) return scan_failed(d, &s);
    for (size_t i = 0; more; i++) {
        int64_t id = -1;
        char *content = NULL;
        size_t cl = 0;
        bool has_id = false, special = false, seen[3] = { 0 }, m2 = false;
        if (tp_js_peek(&s) != '{') return tp_fail(d->err, "%s: added_tokens entry without id/content", d->path), false;
        if (!tp_js_open(&s, '{', &m2)) return scan_failed(d, &s);
        while (m2) {
            char *k;
            size_t kl;
            if (!(tab ? tp_js_key(&s, &k, &kl) : tp_js_key_raw(&s, &k, &kl))) return scan_failed(d, &s);
            bool ok = true;
            if (key_is(k, kl, "id") && !seen[0]) {
                seen[0] = true;
                ok = read_id(&s, &id, &has_id);
            } else if (key_is(k, kl, "content") && !seen[1]) {
                seen[1] = true;
                if (tp_js_peek(&s) == '"') ok = tab ? tp_js_string(&s, &content, &cl) : tp_js_string_raw(&s, &content, &cl);
                else ok = tp_js_skip(&s);
            } else if (key_is(k, kl, "special") && !seen[2]) {
                seen[2] = true;
                ok = read_flag(&s, &special);
            } else {
                ok = tp_js_skip(&s);
            }
            if (!ok || !tp_js_next(&s, '}', &m2)) return scan_failed(d, &s);
        }
        if (!has_id || !content) return tp_fail(d->err, "%s: added_tokens entry without id/content", d->path), false;
        if (limit > 0 && id >= limit) {
            char ex[48];
            excerpt(content, cl, ex);
            return tp_fail(d->err, "%s: added_tokens[%zu] (\"%s\") id %lld is not below the vocabulary size %lld (the "
                                   "model's embedding rows)", d->path, i, ex, (long long)id, (long long)limit), false;
        }
        if (tab) {
            tab->text[id] = content;
            tab->len[id] = (uint32_t)cl;
            tab->type[id] = special || looks_special(content, cl) ? TOKT_CONTROL : TOKT_USER;
        }
        st->entries++;
        st->text_bytes += cl;
        if (id > st->max_id) st->max_id = id;
        if (!tp_js_next(&s, ']', &more)) return scan_failed(d, &s);
    }
    return true;
}

/* Number of entries of model.merges (the document is already validated). */
static bool count_merges(hfdoc *d, size_t *n) {
    tp_jscan s;
    tp_js_init(&s, d->merges.b, (size_t)(d->merges.e - d->merges.b));
    bool more;
    *n = 0;
    if (!tp_js_open(&s, '[', &more)) return scan_failed(d, &s);
    while (more) {
        if (!tp_js_skip(&s) || !tp_js_next(&s, ']', &more)) return scan_failed(d, &s);
        ++*n;
    }
    return true;
}

static bool bad_merge(hfdoc *d, size_t rank) {
    return tp_fail(d->err, "%s: model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", d->path, rank), false;
}

/* merges: "left right" (older files) or ["left", "right"] (tokenizers >= 0.20). */
static bool read_merges(hfdoc *d, tokenizer *t) {
    tp_jscan s;
    tp_js_init(&s, d->merges.b, (size_t)(d->merges.e - d->merges.b));
    bool more;
    if (!tp_js_open(&s, '[', &more)) return scan_failed(d, &s);
    for (size_t rank = 0; more; rank++) {
        int c = tp_js_peek(&s);
        char *l, *r;
        size_t ll, rl;
        if (c == '"') {
            if (!tp_js_string(&s, &l, &ll)) return scan_failed(d, &s);
            if (!tp_tok_add_merge_str(t, l, ll, (int)rank)) return bad_merge(d, rank);
        } else if (c == '[') {
            bool m2, m3;
            if (!tp_js_open(&s, '[', &m2) || !m2 || tp_js_peek(&s) != '"' || !tp_js_string(&s, &l, &ll) ||
                !tp_js_next(&s, ']', &m2) || !m2 || tp_js_peek(&s) != '"' || !tp_js_string(&s, &r, &rl) ||
                !tp_js_next(&s, ']', &m3) || m3)
                return bad_merge(d, rank);
            tp_tok_add_merge(t, l, ll, r, rl, (int)rank);
        } else {
            return bad_merge(d, rank);
        }
        if (!tp_js_next(&s, ']', &more)) return scan_failed(d, &s);
    }
    return true;
}

/* Check what the document declares, then build the vocabulary and merges. */
static tokenizer *build_vocab(hfdoc *d, int max_vocab) {
    const char *path = d->path;
    if (!d->model_obj) return tp_fail(d->err, "%s: missing model", path), NULL;
    if (d->model_type && strcmp(d->model_type, "BPE") != 0)
        return tp_fail(d->err, "%s: model.type '%.40s' not supported (BPE)", path, d->model_type), NULL;
    if (d->byte_fallback)
        return tp_fail(d->err, "%s: model.byte_fallback (SentencePiece-style BPE) not supported; use a GGUF", path),
               NULL;
    if (!d->vocab.set) return tp_fail(d->err, "%s: missing model.vocab", path), NULL;
    if (!d->merges.set) return tp_fail(d->err, "%s: missing model.merges", path), NULL;
    const cJSON *norm = d->sec[SEC_NORMALIZER];
    if (norm && !cJSON_IsNull(norm))
        return tp_fail(d->err, "%s: normalizer '%.40s' not supported (Llama 3 has none)", path,
                       str_item(norm, "type") ? str_item(norm, "type") : "?"), NULL;
    if (!is_llama3_pretok(d->sec[SEC_PRE_TOKENIZER]))
        return tp_fail(d->err, "%s: pre_tokenizer is not Llama 3's (Split with its regex + ByteLevel); not supported",
                       path), NULL;
    const char *dec = str_item(d->sec[SEC_DECODER], "type");
    if (!dec || strcmp(dec, "ByteLevel") != 0)
        return tp_fail(d->err, "%s: decoder '%.40s' not supported (ByteLevel)", path, dec ? dec : "(missing)"), NULL;

    /* pass 1: count, check every id against the limit, size nothing yet */
    vstat st = { 0, 0, -1 };
    int64_t limit = max_vocab > 0 ? max_vocab : 0;
    if (!vocab_pass(d, limit, NULL, &st) || !added_pass(d, limit, NULL, &st)) return NULL;
    if (st.max_id < 0) return tp_fail(d->err, "%s: model.vocab is empty", path), NULL;
    size_t n = (size_t)st.max_id + 1;
    if (!limit && n > 2 * st.entries + 256)
        return tp_fail(d->err, "%s: token id %lld would leave most of the vocabulary empty (%zu entries)", path,
                       (long long)st.max_id, st.entries), NULL;
    size_t n_merges;
    if (!count_merges(d, &n_merges)) return NULL;
    /* ids missing in between become unused pads "[PADn]" (at most 16 bytes each) */
    size_t text_bytes = tp_add_sat(st.text_bytes, tp_mul_sat(n, 16));
    if (text_bytes > TP_TOK_MAX_TEXT || n_merges > TP_TOK_MAX_MERGES)
        return tp_fail(d->err, "%s: %zu bytes of token text and %zu merges is more than tempo reads", path,
                       st.text_bytes, n_merges), NULL;
    char label[TP_ERR_LEN];
    snprintf(label, sizeof label, "%.200s: the tokenizer (%zu tokens, %zu merges)", path, n, n_merges);
    if (tp_ledger_charge(d->led, tp_tok_build_bytes(n, text_bytes, n_merges), label, d->err)) return NULL;

    /* pass 2: the texts, unescaped in place */
    idtab tab = { NULL, NULL, NULL };
    vstat st2 = { 0, 0, -1 };
    tokenizer *t = NULL;
    bool ok = (tab.text = tp_tok_alloc(n, sizeof *tab.text, true, path, "the vocabulary's entries", d->err)) &&
              (tab.len = tp_tok_alloc(n, sizeof *tab.len, true, path, "the vocabulary's entries", d->err)) &&
              (tab.type = tp_tok_alloc(n, sizeof *tab.type, true, path, "the vocabulary's entries", d->err)) &&
              vocab_pass(d, limit, &tab, &st2) && added_pass(d, limit, &tab, &st2) &&
              (t = tp_tok_new(TOK_BPE, (int)n, text_bytes, path, d->err));
    for (size_t i = 0; ok && i < n; i++) {
        if (tab.text[i]) {
            ok = tp_tok_set_token(t, (int)i, tab.text[i], tab.len[i], 0.0f, tab.type[i], d->err);
            continue;
        }
        char pad[32];
        int k = snprintf(pad, sizeof pad, "[PAD%zu]", i);
        ok = tp_tok_set_token(t, (int)i, pad, (size_t)k, 0.0f, TOKT_UNUSED, d->err);
    }
    free(tab.text);
    free(tab.len);
    free(tab.type);
    if (!ok || !tp_tok_index(t, d->err) || !tp_tok_reserve_merges(t, n_merges, d->err) || !read_merges(d, t)) {
        tp_tokenizer_free(t);
        return NULL;
    }
    t->ignore_merges = d->ignore_merges;
    return t;
}

/* Special tokens and flags: tokenizer_config.json first, then the post-processor
 * template, then Llama 3's names. */
static bool set_specials(hfdoc *d, tokenizer *t, const cJSON *cfg, const char *cfg_path) {
    const char *path = d->path;
    const cJSON *tp = find_template(d->sec[SEC_POST_PROCESSOR]);
    const char *bos = cfg ? token_content(cfg, "bos_token") : NULL;
    const char *eos = cfg ? token_content(cfg, "eos_token") : NULL;
    const char *src_bos = cfg_path, *src_eos = cfg_path;
    if (!bos) { bos = template_special(tp, true); src_bos = path; }
    if (!eos) { eos = template_special(tp, false); src_eos = path; }
    if (bos) {
        if ((t->bos = tp_tokenizer_find(t, bos)) < 0)
            return tp_fail(d->err, "%s: bos_token '%.60s' is not in the vocabulary", src_bos, bos), false;
    } else t->bos = tp_tokenizer_find(t, "<|begin_of_text|>");
    if (eos) {
        if ((t->eos = tp_tokenizer_find(t, eos)) < 0)
            return tp_fail(d->err, "%s: eos_token '%.60s' is not in the vocabulary", src_eos, eos), false;
    } else t->eos = tp_tokenizer_find(t, "<|end_of_text|>");

    /* add_bos: the config's add_bos_token; else whether the post-processor template
     * starts with BOS; else (Llama 3's original ByteLevel post-processor) true, the
     * default llama.cpp uses for this pre-tokenizer and so for the converted GGUF. */
    const cJSON *ab = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token") : NULL;
    const cJSON *ae = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token") : NULL;
    const char *tb = template_special(tp, true), *te = template_special(tp, false);
    if (cJSON_IsBool(ab)) t->add_bos = cJSON_IsTrue(ab);
    else if (tp)
        t->add_bos = tb && t->bos >= 0 && tp_tokenizer_find(t, tb) == t->bos;
    else t->add_bos = true;
    if (cJSON_IsBool(ae)) t->add_eos = cJSON_IsTrue(ae);
    else t->add_eos = te && t->eos >= 0 && tp_tokenizer_find(t, te) == t->eos && te != tb;
    return true;
}

/* The chat template, kept as text for src/chat: the file chat_template.jinja, which
 * transformers (4.47 and later) saves and prefers to the config's; else
 * tokenizer_config.json's chat_template, either a string or a list of
 * {"name", "template"} whose "default" entry is the chat template (the other
 * entries are for tool use or retrieval; with no "default" there is none). */
static bool read_chat_template(tokenizer *t, const char *dir, const cJSON *cfg, const char *cfg_path, char *err) {
    size_t dl = strlen(dir);
    char *path = malloc(dl + 32);
    if (!path) return tp_tok_oom(err, dir, dl + 32, "a file name");
    snprintf(path, dl + 32, "%s/chat_template.jinja", dir);
    FILE *probe = fopen(path, "rb");
    if (probe) {
        fclose(probe);
        char e2[TP_ERR_LEN];
        t->chat_template = tp_read_file_max(path, HF_MAX_CHAT_TEMPLATE, NULL, e2);
        if (!t->chat_template) tp_fail(err, "%s", e2);
        free(path);
        return t->chat_template != NULL;
    }
    free(path);

    const cJSON *ct = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "chat_template") : NULL;
    if (!ct || cJSON_IsNull(ct)) return true;
    if (cJSON_IsString(ct)) {
        t->chat_template = strdup(ct->valuestring);
        return t->chat_template ? true : tp_tok_oom(err, cfg_path, strlen(ct->valuestring) + 1, "the chat template");
    }
    if (!cJSON_IsArray(ct))
        return tp_fail(err, "%s: chat_template is neither a string nor a list of {name, template}", cfg_path), false;
    const cJSON *e;
    cJSON_ArrayForEach(e, ct) {
        const char *name = str_item(e, "name"), *tmpl = str_item(e, "template");
        if (!name || !tmpl) return tp_fail(err, "%s: a chat_template entry has no name or template", cfg_path), false;
        if (strcmp(name, "default") == 0 && !t->chat_template && !(t->chat_template = strdup(tmpl)))
            return tp_tok_oom(err, cfg_path, strlen(tmpl) + 1, "the chat template");
    }
    return true;
}

tokenizer *tp_tokenizer_from_hf(const char *dir, char *err) { return tp_tokenizer_from_hf_ex(dir, 0, NULL, err); }

tokenizer *tp_tokenizer_from_hf_ex(const char *dir, int max_vocab, tp_ledger *led, char *err) {
    if (!dir) return tp_fail(err, "tokenizer: no directory"), NULL;
    size_t dl = strlen(dir);
    char *path = malloc(dl + 32), *cfg_path = malloc(dl + 32);
    if (!path || !cfg_path) {
        free(path);
        free(cfg_path);
        return tp_fail(err, "tokenizer: out of memory (%zu bytes for the file names of %.200s)", 2 * (dl + 32), dir),
               NULL;
    }
    snprintf(path, dl + 32, "%s/tokenizer.json", dir);
    snprintf(cfg_path, dl + 32, "%s/tokenizer_config.json", dir);
    hfdoc d = { .path = path, .err = err, .led = led };
    tokenizer *t = NULL;
    cJSON *cfg = NULL;
    size_t cfg_charged = 0, buf_charged = 0, len = 0;
    char *buf = NULL;
    char label[TP_ERR_LEN / 2];

    struct stat st;
    if (stat(path, &st) != 0) { tp_fail(err, "%s: cannot open", path); goto out; }
    snprintf(label, sizeof label, "%.200s: reading the file", path);
    buf_charged = st.st_size > 0 ? (size_t)st.st_size + 2 : 2;
    if (st.st_size > 0 && (uint64_t)st.st_size > HF_MAX_TOKENIZER_JSON) {
        tp_fail(err, "%s: file is %lld bytes, more than the %zu a tokenizer.json may have", path,
                (long long)st.st_size, HF_MAX_TOKENIZER_JSON);
        buf_charged = 0;
        goto out;
    }
    if (tp_ledger_charge(led, buf_charged, label, err)) { buf_charged = 0; goto out; }
    if (!(buf = tp_read_file_max(path, HF_MAX_TOKENIZER_JSON, &len, err))) goto out;
    if (!read_top(&d, buf, len)) goto out;

    if (stat(cfg_path, &st) == 0) {
        /* only the four keys read become trees (the file may hold a big chat
         * template and thousands of added tokens) */
        static const char *const keys[] = { "bos_token", "eos_token", "add_bos_token", "add_eos_token", "chat_template",
                                            NULL };
        cfg = tp_json_read_keys(cfg_path, HF_MAX_TOKENIZER_CONFIG, keys, HF_MAX_CHAT_TEMPLATE, led, &cfg_charged, err);
        if (!cfg) goto out;
    }
    if (!(t = build_vocab(&d, max_vocab))) goto out;
    if (!set_specials(&d, t, cfg, cfg_path) || !tp_tok_finish(t, err) || !read_chat_template(t, dir, cfg, cfg_path, err)) {
        tp_tokenizer_free(t);
        t = NULL;
    }
out:
    for (int i = 0; i < N_SEC; i++) cJSON_Delete(d.sec[i]);
    tp_ledger_release(led, d.sec_charged);
    cJSON_Delete(cfg);
    tp_ledger_release(led, cfg_charged);
    free(buf);
    tp_ledger_release(led, buf_charged);
    free(path);
    free(cfg_path);
    return t;
}
