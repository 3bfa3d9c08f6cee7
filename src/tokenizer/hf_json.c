/* hf_json.c: the Llama 3 byte-level BPE tokenizer from a Hugging Face folder:
 * tokenizer.json (model.vocab, model.merges in "a b" or ["a", "b"] form,
 * model.ignore_merges, added_tokens, the pre-tokenizer and decoder) and the
 * optional tokenizer_config.json (bos_token, eos_token, add_bos_token,
 * add_eos_token, chat_template) and chat_template.jinja. The result is the same tokenizer tp_tokenizer_from_gguf builds
 * from llama.cpp's conversion of these files.
 */
#include "tokenizer/tok_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

static cJSON *parse_json_file(const char *path, bool optional, bool *missing, char *err) {
    size_t n;
    char e2[TP_ERR_LEN];
    *missing = false;
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        *missing = true;
        if (!optional) tp_fail(err, "%s: cannot open", path);
        return NULL;
    }
    fclose(probe);
    char *buf = tp_read_file(path, &n, e2);
    if (!buf) return tp_fail(err, "%s", e2), NULL;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(buf, n, &end, 0);
    if (!j) tp_fail(err, "%s: invalid JSON near byte %ld", path, end ? (long)(end - buf) : -1L);
    free(buf);
    return j;
}

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

static bool json_id(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d < (double)(1 << 30)) || d != floor(d)) return false;
    *out = (int)d;
    return true;
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
static bool looks_special(const char *s) {
    size_t n = strlen(s);
    return n >= 4 && strncmp(s, "<|", 2) == 0 && strcmp(s + n - 2, "|>") == 0;
}

static tokenizer *build(const cJSON *root, const cJSON *cfg, const char *path, const char *cfg_path,
                        char *err) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return tp_fail(err, "%s: missing model", path), NULL;
    const char *mtype = str_item(model, "type");
    if (mtype && strcmp(mtype, "BPE") != 0)
        return tp_fail(err, "%s: model.type '%s' not supported (BPE)", path, mtype), NULL;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")))
        return tp_fail(err, "%s: model.byte_fallback (SentencePiece-style BPE) not supported; use a GGUF", path),
               NULL;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) return tp_fail(err, "%s: missing model.vocab", path), NULL;
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges)) return tp_fail(err, "%s: missing model.merges", path), NULL;
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsArray(added) && !cJSON_IsNull(added))
        return tp_fail(err, "%s: added_tokens is not an array", path), NULL;

    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm))
        return tp_fail(err, "%s: normalizer '%s' not supported (Llama 3 has none)", path,
                       str_item(norm, "type") ? str_item(norm, "type") : "?"), NULL;
    if (!is_llama3_pretok(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer")))
        return tp_fail(err, "%s: pre_tokenizer is not Llama 3's (Split with its regex + ByteLevel); not supported",
                       path), NULL;
    const char *dec = str_item(cJSON_GetObjectItemCaseSensitive(root, "decoder"), "type");
    if (!dec || strcmp(dec, "ByteLevel") != 0)
        return tp_fail(err, "%s: decoder '%s' not supported (ByteLevel)", path, dec ? dec : "(missing)"), NULL;

    /* vocabulary size: the largest id + 1 (ids missing in between become unused pads) */
    int max_id = -1, id;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        if (!json_id(e, &id)) return tp_fail(err, "%s: model.vocab[\"%s\"] is not a token id", path, e->string), NULL;
        if (id > max_id) max_id = id;
    }
    for (const cJSON *e = added ? added->child : NULL; e; e = e->next) {
        if (!json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id) || !str_item(e, "content"))
            return tp_fail(err, "%s: added_tokens entry without id/content", path), NULL;
        if (id > max_id) max_id = id;
    }
    if (max_id < 0) return tp_fail(err, "%s: model.vocab is empty", path), NULL;
    int n = max_id + 1;

    const char **text = tp_xcalloc((size_t)n, sizeof *text);
    uint8_t *type = tp_xcalloc((size_t)n, 1);
    for (const cJSON *e = vocab->child; e; e = e->next) {
        json_id(e, &id);
        text[id] = e->string;
        type[id] = TOKT_NORMAL;
    }
    for (const cJSON *e = added ? added->child : NULL; e; e = e->next) {
        json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id);
        text[id] = str_item(e, "content");
        bool special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
        type[id] = special || looks_special(text[id]) ? TOKT_CONTROL : TOKT_USER;
    }
    tokenizer *t = tp_tok_new(TOK_BPE, n, path);
    for (int i = 0; i < n; i++) {
        if (text[i]) { tp_tok_set_token(t, i, text[i], strlen(text[i]), 0.0f, type[i]); continue; }
        char pad[32];
        int k = snprintf(pad, sizeof pad, "[PAD%d]", i);
        tp_tok_set_token(t, i, pad, (size_t)k, 0.0f, TOKT_UNUSED);
    }
    free(text);
    free(type);
    tp_tok_index(t);

    /* merges: "left right" (older files) or ["left", "right"] (tokenizers >= 0.20) */
    tp_tok_reserve_merges(t, (size_t)cJSON_GetArraySize(merges));
    int rank = 0;
    for (const cJSON *e = merges->child; e; e = e->next, rank++) {
        if (cJSON_IsString(e)) {
            if (tp_tok_add_merge_str(t, e->valuestring, strlen(e->valuestring), rank)) continue;
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            const char *l = e->child->valuestring, *r = e->child->next->valuestring;
            tp_tok_add_merge(t, l, strlen(l), r, strlen(r), rank);
            continue;
        }
        tp_fail(err, "%s: model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]", path, rank);
        tp_tokenizer_free(t);
        return NULL;
    }
    t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));

    /* special tokens and flags: tokenizer_config.json first, then the post-processor
     * template, then Llama 3's names */
    const cJSON *tp = find_template(cJSON_GetObjectItemCaseSensitive(root, "post_processor"));
    const char *bos = cfg ? token_content(cfg, "bos_token") : NULL;
    const char *eos = cfg ? token_content(cfg, "eos_token") : NULL;
    const char *src_bos = cfg_path, *src_eos = cfg_path;
    if (!bos) { bos = template_special(tp, true); src_bos = path; }
    if (!eos) { eos = template_special(tp, false); src_eos = path; }
    if (bos) {
        if ((t->bos = tp_tokenizer_find(t, bos)) < 0) {
            tp_fail(err, "%s: bos_token '%s' is not in the vocabulary", src_bos, bos);
            tp_tokenizer_free(t);
            return NULL;
        }
    } else t->bos = tp_tokenizer_find(t, "<|begin_of_text|>");
    if (eos) {
        if ((t->eos = tp_tokenizer_find(t, eos)) < 0) {
            tp_fail(err, "%s: eos_token '%s' is not in the vocabulary", src_eos, eos);
            tp_tokenizer_free(t);
            return NULL;
        }
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

    if (!tp_tok_finish(t, err)) { tp_tokenizer_free(t); return NULL; }
    return t;
}

/* The chat template, kept as text for src/chat: the file chat_template.jinja, which
 * transformers (4.47 and later) saves and prefers to the config's; else
 * tokenizer_config.json's chat_template, either a string or a list of
 * {"name", "template"} whose "default" entry is the chat template (the other
 * entries are for tool use or retrieval; with no "default" there is none). */
static bool read_chat_template(tokenizer *t, const char *dir, const cJSON *cfg, const char *cfg_path, char *err) {
    size_t dl = strlen(dir);
    char *path = tp_xmalloc(dl + 32);
    snprintf(path, dl + 32, "%s/chat_template.jinja", dir);
    FILE *probe = fopen(path, "rb");
    if (probe) {
        fclose(probe);
        char e2[TP_ERR_LEN];
        t->chat_template = tp_read_file(path, NULL, e2);
        if (!t->chat_template) tp_fail(err, "%s", e2);
        free(path);
        return t->chat_template != NULL;
    }
    free(path);

    const cJSON *ct = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "chat_template") : NULL;
    if (!ct || cJSON_IsNull(ct)) return true;
    if (cJSON_IsString(ct)) {
        t->chat_template = tp_xstrdup(ct->valuestring);
        return true;
    }
    if (!cJSON_IsArray(ct))
        return tp_fail(err, "%s: chat_template is neither a string nor a list of {name, template}", cfg_path), false;
    const cJSON *e;
    cJSON_ArrayForEach(e, ct) {
        const char *name = str_item(e, "name"), *tmpl = str_item(e, "template");
        if (!name || !tmpl) return tp_fail(err, "%s: a chat_template entry has no name or template", cfg_path), false;
        if (strcmp(name, "default") == 0 && !t->chat_template) t->chat_template = tp_xstrdup(tmpl);
    }
    return true;
}

tokenizer *tp_tokenizer_from_hf(const char *dir, char *err) {
    if (!dir) return tp_fail(err, "tokenizer: no directory"), NULL;
    size_t dl = strlen(dir);
    char *path = tp_xmalloc(dl + 32), *cfg_path = tp_xmalloc(dl + 32);
    snprintf(path, dl + 32, "%s/tokenizer.json", dir);
    snprintf(cfg_path, dl + 32, "%s/tokenizer_config.json", dir);
    bool missing;
    tokenizer *t = NULL;
    cJSON *root = parse_json_file(path, false, &missing, err);
    cJSON *cfg = NULL;
    if (root) {
        cfg = parse_json_file(cfg_path, true, &missing, err);
        if (cfg && !cJSON_IsObject(cfg)) tp_fail(err, "%s: not a JSON object", cfg_path);
        else if (!cJSON_IsObject(root)) tp_fail(err, "%s: not a JSON object", path);
        else if (cfg || missing) t = build(root, cfg, path, cfg_path, err);
        if (t && !read_chat_template(t, dir, cfg, cfg_path, err)) {
            tp_tokenizer_free(t);
            t = NULL;
        }
    }
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    free(path);
    free(cfg_path);
    return t;
}
