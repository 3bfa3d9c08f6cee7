/* text.c: bracket text, clean text, colours, UTF-8 repair. */
#include "output/text.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

void tp_str_append(tp_str *s, const char *p, size_t n) {
    if (s->failed) return;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1) cap *= 2;
        char *more = realloc(s->buf, cap);
        if (!more) { s->failed = true; return; }
        s->buf = more;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->buf[s->len] = 0;
}

void tp_str_cat(tp_str *s, const char *p) { tp_str_append(s, p, strlen(p)); }

void tp_str_printf(tp_str *s, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) { tp_str_append(s, tmp, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) { s->failed = true; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    tp_str_append(s, big, (size_t)n);
    free(big);
}

char *tp_str_take(tp_str *s) {
    char *r = s->failed ? NULL : s->buf ? s->buf : strdup("");
    if (s->failed) free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
    s->failed = false;
    return r;
}

const char *tp_text_color(int j) {
    static const char *const colors[] = { "\x1b[32m", "\x1b[33m", "\x1b[34m", "\x1b[35m", "\x1b[36m", "\x1b[31m" };
    return colors[(j < 0 ? 0 : j) % 6];
}

static void append_member(tp_str *s, const tempo_token *t, bool show_ids) {
    if (t->text) tp_text_display_append(s, t->text);
    if (show_ids) tp_str_printf(s, "(%d)", (int)t->token_id);
}

void tp_text_append_step(tp_str *s, const tempo_step *st, bool color, bool show_ids) {
    int alive = 0;
    for (int j = 0; j < st->n_tokens; j++) alive += !st->tokens[j].pruned;
    if (alive == 1) {
        for (int j = 0; j < st->n_tokens; j++)
            if (!st->tokens[j].pruned) append_member(s, &st->tokens[j], show_ids);
        return;
    }
    if (alive == 0) return;
    tp_str_cat(s, "[");
    bool first = true;
    for (int j = 0; j < st->n_tokens; j++) {
        if (st->tokens[j].pruned) continue;
        if (!first) tp_str_cat(s, "/");
        first = false;
        if (color) tp_str_cat(s, tp_text_color(j));
        append_member(s, &st->tokens[j], show_ids);
        if (color) tp_str_cat(s, TP_TEXT_RESET);
    }
    tp_str_cat(s, "]");
}

void tp_text_append_step_raw(tp_str *s, const tempo_step *st, bool show_ids) {
    int alive = 0;
    for (int j = 0; j < st->n_tokens; j++) alive += !st->tokens[j].pruned;
    bool bracket = alive > 1, first = true;
    if (bracket) tp_str_cat(s, "[");
    for (int j = 0; j < st->n_tokens; j++) {
        const tempo_token *t = &st->tokens[j];
        if (t->pruned) continue;
        if (!first) tp_str_cat(s, "/");
        first = false;
        if (t->text) tp_str_cat(s, t->text);
        if (show_ids) tp_str_printf(s, "(%d)", (int)t->token_id);
    }
    if (bracket) tp_str_cat(s, "]");
}

const tempo_token *tp_text_clean_member(const tempo_step *st) {
    const tempo_token *best = NULL;
    for (int j = 0; j < st->n_tokens; j++) {
        const tempo_token *t = &st->tokens[j];
        if (t->pruned) continue;
        if (!best || t->probability > best->probability ||
            (t->probability == best->probability && t->token_id < best->token_id))
            best = t;
    }
    return best;
}

/* The bytes of a whole text made readable at once: a character whose bytes came in several
 * single-token steps reads as the character, and only bytes that stay invalid show as <0xNN>. */
static char *display_of(tp_str *raw) {
    char *r = tp_str_take(raw);
    if (!r) return NULL;
    tp_str s = { 0 };
    tp_text_display_append(&s, r);
    free(r);
    return tp_str_take(&s);
}

char *tp_text_generated(const char *prompt, const tempo_step *steps, int n, bool show_ids) {
    tp_str s = { 0 };
    tp_str_cat(&s, prompt ? prompt : "");
    for (int k = 0; k < n; k++) tp_text_append_step_raw(&s, &steps[k], show_ids);
    return display_of(&s);
}

char *tp_text_clean(const char *prompt, const tempo_step *steps, int n) {
    tp_str s = { 0 };
    tp_str_cat(&s, prompt ? prompt : "");
    for (int k = 0; k < n; k++) {
        const tempo_token *t = tp_text_clean_member(&steps[k]);
        if (t && t->text) tp_str_cat(&s, t->text);
    }
    return display_of(&s);
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when it is not one. */
static int utf8_len(const unsigned char *p) {
    unsigned c = p[0];
    int n;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) { n = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 4; cp = c & 0x07; }
    else return 0;
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return n;
}

void tp_text_display_append(tp_str *out, const char *s) {
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    tp_str_append(out, "", 0);
    while (*p) {
        int n = utf8_len(p);
        if (n) { tp_str_append(out, (const char *)p, (size_t)n); p += n; }
        else { tp_str_printf(out, "<0x%02X>", (unsigned)*p); p++; }
    }
}

bool tp_text_is_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        int n = utf8_len(p);
        if (!n) return false;
        p += n;
    }
    return true;
}

char *tempo_token_display(const char *text) {
    tp_str s = { 0 };
    tp_text_display_append(&s, text);
    return tp_str_take(&s);
}

char *tp_utf8_sanitize(const char *s) {
    tp_str out = { 0 };
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    tp_str_append(&out, "", 0);
    while (*p) {
        int n = utf8_len(p);
        if (n) { tp_str_append(&out, (const char *)p, (size_t)n); p += n; }
        else { tp_str_cat(&out, "\xEF\xBF\xBD"); p++; }
    }
    return tp_str_take(&out);
}

char *tempo_step_text(const tempo_step *st, bool color, bool show_token_ids) {
    tp_str s = { 0 };
    tp_text_append_step(&s, st, color, show_token_ids);
    return tp_str_take(&s);
}

const char *tempo_stop_reason_name(tempo_stop_reason r) {
    switch (r) {
    case TEMPO_STOP_NONE: return "none";
    case TEMPO_STOP_MAX_TOKENS: return "max_tokens";
    case TEMPO_STOP_EOS: return "eos";
    case TEMPO_STOP_MEMORY_LIMIT: return "memory_limit";
    case TEMPO_STOP_CACHE_LIMIT: return "cache_limit";
    case TEMPO_STOP_ERROR: return "error";
    case TEMPO_STOP_INTERRUPTED: return "interrupted";
    }
    return "error";
}
