/* json.c: strict streaming JSON scanner and bounded cJSON parsing (json.h).
 *
 * The grammar is RFC 8259's. Everything is iterative (an explicit stack of at
 * most TP_JSON_MAX_DEPTH brackets), so no input can exhaust the C stack, and
 * every loop advances the cursor, so time is linear in the text.
 */
#include "format/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/common.h"

/* Longest number text accepted: cJSON reads numbers through a 64-byte buffer. */
#define JS_MAX_NUMBER 63

void tp_js_init(tp_jscan *s, char *buf, size_t len) {
    memset(s, 0, sizeof *s);
    s->p = s->base = buf;
    s->end = buf + len;
}

bool tp_js_fail(tp_jscan *s, const char *msg) {
    if (!s->msg) { /* keep the first (innermost) reason */
        s->msg = msg;
        s->at = (size_t)(s->p - s->base);
    }
    return false;
}

int tp_js_error(const tp_jscan *s, const char *what, char *err) {
    return tp_fail(err, "%s: not valid JSON at byte %zu: %s", what, s->at, s->msg ? s->msg : "invalid");
}

int tp_js_peek(tp_jscan *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) s->p++;
    return s->p < s->end ? (unsigned char)*s->p : -1;
}

static int hex4(const char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v << 4 | d;
    }
    return v;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string at the cursor. With write, unescape it in place (the output is never
 * longer than the escaped text, so it fits where the text was). */
static bool scan_string(tp_jscan *s, bool write, char **out, size_t *len) {
    if (s->p >= s->end || *s->p != '"') return tp_js_fail(s, "expected a string");
    char *r = ++s->p, *w = r, *start = r;
    for (;;) {
        if (r >= s->end) { s->p = r; return tp_js_fail(s, "unterminated string"); }
        unsigned char c = (unsigned char)*r;
        if (c == '"') break;
        if (c < 0x20) { s->p = r; return tp_js_fail(s, "control character in a string"); }
        if (c != '\\') {
            if (write) *w = (char)c;
            w++, r++;
            continue;
        }
        if (r + 1 >= s->end) { s->p = r; return tp_js_fail(s, "unterminated string"); }
        char e = r[1], v;
        switch (e) {
        case '"': v = '"'; break;
        case '\\': v = '\\'; break;
        case '/': v = '/'; break;
        case 'b': v = '\b'; break;
        case 'f': v = '\f'; break;
        case 'n': v = '\n'; break;
        case 'r': v = '\r'; break;
        case 't': v = '\t'; break;
        case 'u': {
            int hi = s->end - r >= 6 ? hex4(r + 2) : -1;
            if (hi < 0) { s->p = r; return tp_js_fail(s, "bad \\u escape"); }
            uint32_t cp = (uint32_t)hi;
            size_t used = 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF) { s->p = r; return tp_js_fail(s, "lone low surrogate"); }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                int lo = s->end - r >= 12 && r[6] == '\\' && r[7] == 'u' ? hex4(r + 8) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF) { s->p = r; return tp_js_fail(s, "lone high surrogate"); }
                cp = 0x10000 + ((cp - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
                used = 12;
            }
            char tmp[4];
            size_t k = put_utf8(tmp, cp);
            if (write) memcpy(w, tmp, k);
            w += k;
            r += used;
            continue;
        }
        default: s->p = r; return tp_js_fail(s, "bad escape in a string");
        }
        if (write) *w = v;
        w++, r += 2;
    }
    s->n_strings++;
    s->n_str_bytes += (size_t)(r - start);
    s->p = r + 1;
    if (write) {
        *w = 0; /* w <= r: overwrites at most the closing quote, already consumed */
        if (out) *out = start;
        if (len) *len = (size_t)(w - start);
    }
    return true;
}

bool tp_js_string(tp_jscan *s, char **out, size_t *len) {
    tp_js_peek(s);
    return scan_string(s, true, out, len);
}

/* Validate a number's grammar; *n is its length. */
static bool scan_number(tp_jscan *s, size_t *n) {
    const char *p = s->p, *e = s->end;
    if (p < e && *p == '-') p++;
    if (p >= e || *p < '0' || *p > '9') return tp_js_fail(s, "bad number");
    if (*p == '0') p++;
    else while (p < e && *p >= '0' && *p <= '9') p++;
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9') return tp_js_fail(s, "bad number");
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-')) p++;
        if (p >= e || *p < '0' || *p > '9') return tp_js_fail(s, "bad number");
        while (p < e && *p >= '0' && *p <= '9') p++;
    }
    *n = (size_t)(p - s->p);
    if (*n > JS_MAX_NUMBER) return tp_js_fail(s, "number longer than 63 characters");
    return true;
}

bool tp_js_number(tp_jscan *s, double *out) {
    tp_js_peek(s);
    size_t n;
    if (!scan_number(s, &n)) return false;
    char buf[JS_MAX_NUMBER + 1];
    memcpy(buf, s->p, n);
    buf[n] = 0;
    *out = strtod(buf, NULL); /* the grammar is checked: strtod reads exactly these bytes */
    s->p += n;
    return true;
}

static bool scan_literal(tp_jscan *s, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0) return tp_js_fail(s, "expected a value");
    s->p += n;
    return true;
}

bool tp_js_bool(tp_jscan *s, bool *out) {
    int c = tp_js_peek(s);
    if (c == 't' && scan_literal(s, "true")) { *out = true; return true; }
    if (c == 'f' && scan_literal(s, "false")) { *out = false; return true; }
    return tp_js_fail(s, "expected true or false");
}

bool tp_js_open(tp_jscan *s, char open, bool *more) {
    if (tp_js_peek(s) != open) return tp_js_fail(s, open == '{' ? "expected an object" : "expected an array");
    s->p++;
    char close = open == '{' ? '}' : ']';
    if (tp_js_peek(s) == close) { s->p++; *more = false; }
    else *more = true;
    return true;
}

bool tp_js_key(tp_jscan *s, char **key, size_t *len) {
    if (tp_js_peek(s) != '"') return tp_js_fail(s, "expected an object key");
    if (!scan_string(s, true, key, len)) return false;
    if (tp_js_peek(s) != ':') return tp_js_fail(s, "expected ':' after an object key");
    s->p++;
    return true;
}

bool tp_js_string_raw(tp_jscan *s, char **raw, size_t *raw_len) {
    tp_js_peek(s);
    char *start = s->p + 1;
    if (!scan_string(s, false, NULL, NULL)) return false;
    *raw = start;
    *raw_len = (size_t)(s->p - 1 - start);
    return true;
}

bool tp_js_key_raw(tp_jscan *s, char **raw, size_t *raw_len) {
    if (tp_js_peek(s) != '"') return tp_js_fail(s, "expected an object key");
    if (!tp_js_string_raw(s, raw, raw_len)) return false;
    if (tp_js_peek(s) != ':') return tp_js_fail(s, "expected ':' after an object key");
    s->p++;
    return true;
}

bool tp_js_next(tp_jscan *s, char close, bool *more) {
    int c = tp_js_peek(s);
    if (c == ',') { s->p++; *more = true; return true; }
    if (c == close) { s->p++; *more = false; return true; }
    return tp_js_fail(s, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
}

bool tp_js_finish(tp_jscan *s) {
    if (tp_js_peek(s) != -1) return tp_js_fail(s, "text after the JSON value");
    return true;
}

/* A key (validated, not unescaped) and its ':'. */
static bool skip_key(tp_jscan *s) {
    if (tp_js_peek(s) != '"') return tp_js_fail(s, "expected an object key");
    if (!scan_string(s, false, NULL, NULL)) return false;
    if (tp_js_peek(s) != ':') return tp_js_fail(s, "expected ':' after an object key");
    s->p++;
    return true;
}

bool tp_js_skip_span(tp_jscan *s, char **start, char **end) {
    char stack[TP_JSON_MAX_DEPTH];
    int depth = 0;
    tp_js_peek(s);
    if (start) *start = s->p;
    for (;;) {
        /* a value */
        int c = tp_js_peek(s);
        s->n_values++;
        if (c == '{' || c == '[') {
            char close = c == '{' ? '}' : ']';
            if (depth == TP_JSON_MAX_DEPTH) return tp_js_fail(s, "nested too deeply");
            s->p++;
            if (tp_js_peek(s) == close) s->p++;
            else {
                stack[depth++] = close;
                if (close == '}' && !skip_key(s)) return false;
                continue;
            }
        } else if (c == '"') {
            if (!scan_string(s, false, NULL, NULL)) return false;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t n;
            if (!scan_number(s, &n)) return false;
            s->p += n;
        } else if (c == 't') {
            if (!scan_literal(s, "true")) return false;
        } else if (c == 'f') {
            if (!scan_literal(s, "false")) return false;
        } else if (c == 'n') {
            if (!scan_literal(s, "null")) return false;
        } else {
            return tp_js_fail(s, "expected a value");
        }
        /* after a value: close brackets until a ',' asks for the next one */
        for (;;) {
            if (depth == 0) {
                if (end) *end = s->p;
                return true;
            }
            char close = stack[depth - 1];
            c = tp_js_peek(s);
            if (c == close) { s->p++; depth--; continue; }
            if (c != ',') return tp_js_fail(s, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
            s->p++;
            if (close == '}' && !skip_key(s)) return false;
            break;
        }
    }
}

size_t tp_json_tree_bytes(size_t n_values, size_t n_strings, size_t n_str_bytes) {
    /* a node per value, a block per string (key or value) of its unescaped
     * length + 1, which the escaped length bounds */
    size_t node = tp_heap_block_bytes(sizeof(cJSON));
    return tp_add_sat(tp_add_sat(tp_mul_sat(n_values, node), tp_mul_sat(n_strings, 32)), n_str_bytes);
}

cJSON *tp_json_parse(const char *what, const char *text, size_t len, tp_ledger *led, size_t *charged, char *err) {
    tp_jscan s;
    tp_js_init(&s, (char *)text, len); /* skipping never writes */
    if (!tp_js_skip(&s) || !tp_js_finish(&s)) {
        tp_js_error(&s, what, err);
        return NULL;
    }
    size_t cost = tp_json_tree_bytes(s.n_values, s.n_strings, s.n_str_bytes);
    char label[TP_ERR_LEN / 2];
    snprintf(label, sizeof label, "%.200s: parsing %zu JSON values", what, s.n_values);
    if (tp_ledger_charge(led, cost, label, err)) return NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, NULL, false);
    if (!j) {
        tp_ledger_release(led, cost);
        tp_fail(err, "%s: cannot parse its JSON (out of memory?)", what);
        return NULL;
    }
    *charged = cost;
    return j;
}

cJSON *tp_json_read_keys(const char *path, size_t max_len, const char *const *keys, size_t max_value,
                         tp_ledger *led, size_t *charged, char *err) {
    struct stat st;
    size_t fbytes = stat(path, &st) == 0 && st.st_size > 0 ? (size_t)st.st_size + 2 : 2;
    if (max_len && fbytes > max_len + 2)
        return tp_fail(err, "%s: file is %lld bytes, more than the %zu this file may have", path, (long long)st.st_size,
                       max_len), NULL;
    char label[TP_ERR_LEN / 2];
    snprintf(label, sizeof label, "%.200s: reading the file", path);
    if (tp_ledger_charge(led, fbytes, label, err)) return NULL;
    size_t n;
    char *txt = tp_read_file_max(path, max_len, &n, err);
    cJSON *obj = NULL;
    size_t total = 0;
    tp_jscan s;
    if (!txt) goto out;
    tp_js_init(&s, txt, n);
    if (tp_js_peek(&s) != '{') {
        if (!tp_js_skip(&s) || !tp_js_finish(&s)) tp_js_error(&s, path, err);
        else tp_fail(err, "%s: not a JSON object", path);
        goto out;
    }
    bool more;
    if (!(obj = cJSON_CreateObject())) {
        tp_fail(err, "%s: out of memory (%zu bytes for its JSON object)", path, sizeof(cJSON));
        goto out;
    }
    tp_js_open(&s, '{', &more);
    while (more) {
        char *k, *b, *e;
        size_t kl;
        if (!tp_js_key(&s, &k, &kl) || !tp_js_skip_span(&s, &b, &e)) { tp_js_error(&s, path, err); goto bad; }
        const char *want = NULL;
        for (size_t i = 0; keys[i] && !want; i++)
            if (strlen(keys[i]) == kl && memcmp(keys[i], k, kl) == 0) want = keys[i];
        if (want && !cJSON_GetObjectItemCaseSensitive(obj, want)) {
            size_t vl = (size_t)(e - b), ch = 0;
            if (vl > max_value) {
                tp_fail(err, "%s: %s is %zu bytes of JSON (at most %zu)", path, want, vl, max_value);
                goto bad;
            }
            char what[TP_ERR_LEN];
            snprintf(what, sizeof what, "%.200s: %.60s", path, want);
            cJSON *v = tp_json_parse(what, b, vl, led, &ch, err);
            if (!v) goto bad;
            total += ch;
            /* it copies the key: unchecked, a failure would drop the value
             * and the key would read as absent (a default used instead) */
            if (!cJSON_AddItemToObject(obj, want, v)) {
                cJSON_Delete(v);
                tp_fail(err, "%s: out of memory (%zu bytes for the key %s)", path, strlen(want) + 1, want);
                goto bad;
            }
        }
        if (!tp_js_next(&s, '}', &more)) { tp_js_error(&s, path, err); goto bad; }
    }
    if (!tp_js_finish(&s)) { tp_js_error(&s, path, err); goto bad; }
    *charged = total;
    goto out;
bad:
    cJSON_Delete(obj);
    tp_ledger_release(led, total);
    obj = NULL;
out:
    free(txt);
    tp_ledger_release(led, fbytes);
    return obj;
}
