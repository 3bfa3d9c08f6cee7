/* json.h: reading untrusted JSON files with bounded time and memory.
 *
 * cJSON builds a tree of 64-byte nodes: a document like [0,0,0,...] costs about
 * 40 times its size, so a 100 MB file can take 4 GB. Two tools avoid that:
 *
 *  - tp_jscan, a strict streaming reader over a writable buffer: it walks the
 *    text without building anything (strings are unescaped in place), so a
 *    large document (tokenizer.json, a safetensors header, a shard index) is
 *    read in one pass with memory proportional to what the caller keeps.
 *  - tp_json_parse, for small documents: a tp_jscan pass first validates the
 *    text and counts its values and string bytes, the bound of what cJSON will
 *    allocate; that bound is charged to the ledger before cJSON parses.
 *  - tp_json_read_keys, for config files (config.json and friends): the scan
 *    walks the whole file and only the top-level values tempo reads go
 *    through tp_json_parse.
 *
 * Both accept RFC 8259 JSON only (no comments, no trailing commas, no control
 * characters in strings, no lone surrogates), nested at most TP_JSON_MAX_DEPTH.
 */
#ifndef TEMPO_JSON_H
#define TEMPO_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "core/checked.h"

#define TP_JSON_MAX_DEPTH 256

typedef struct {
    char *p, *end, *base;   /* cursor, end of text, start (for byte offsets in messages) */
    const char *msg;        /* why the scan failed (static text) */
    size_t at;              /* byte offset of the failure */
    /* counted by tp_js_skip: what cJSON would allocate for the skipped values */
    size_t n_values, n_strings, n_str_bytes;
} tp_jscan;

/* Scan buf[0, len). buf must stay writable: tp_js_string unescapes in place. */
void tp_js_init(tp_jscan *s, char *buf, size_t len);
/* Skip whitespace; the next byte, or -1 at the end. */
int tp_js_peek(tp_jscan *s);
/* A string: *out points into the buffer, unescaped and NUL-terminated, *len bytes
 * (it may contain NUL bytes from \u0000). */
bool tp_js_string(tp_jscan *s, char **out, size_t *len);
bool tp_js_number(tp_jscan *s, double *out);
bool tp_js_bool(tp_jscan *s, bool *out);
/* Any value, validated and left untouched; *start / *end (may be NULL) bound its text. */
bool tp_js_skip_span(tp_jscan *s, char **start, char **end);
static inline bool tp_js_skip(tp_jscan *s) { return tp_js_skip_span(s, NULL, NULL); }
/* Open an object ('{') or array ('['): *more is true when a first member follows. */
bool tp_js_open(tp_jscan *s, char open, bool *more);
/* In an object: the member's key and its ':'. */
bool tp_js_key(tp_jscan *s, char **key, size_t *len);
/* The same without unescaping (the buffer is left as it is, so it can be
 * scanned again): *raw points at the key's text as written, *raw_len bytes. */
bool tp_js_key_raw(tp_jscan *s, char **raw, size_t *raw_len);
/* A string, validated but not unescaped (as tp_js_key_raw). */
bool tp_js_string_raw(tp_jscan *s, char **raw, size_t *raw_len);
/* After a member: ',' (*more = true) or the closing bracket (*more = false). */
bool tp_js_next(tp_jscan *s, char close, bool *more);
/* Nothing but whitespace is left. */
bool tp_js_finish(tp_jscan *s);
/* Record a failure at the cursor; returns false. */
bool tp_js_fail(tp_jscan *s, const char *msg);
/* "not valid JSON at byte N: <why>" into err, prefixed with what (a path). Returns -1. */
int tp_js_error(const tp_jscan *s, const char *what, char *err);

/* Bytes cJSON allocates for a document with these counts (an upper bound). */
size_t tp_json_tree_bytes(size_t n_values, size_t n_strings, size_t n_str_bytes);

/* Parse text[0, len) (what: the file, for messages) with cJSON after checking it
 * and charging its tree to the ledger (*charged: what to release after
 * cJSON_Delete). NULL with err on invalid JSON or when over the limit. */
cJSON *tp_json_parse(const char *what, const char *text, size_t len, tp_ledger *led, size_t *charged, char *err);
/* Read a file of at most max_len bytes holding a JSON object, and build a cJSON
 * object of only its members named in keys (NULL-terminated; the first of
 * duplicates, as cJSON's lookup), each value at most max_value bytes of text.
 * The whole document is validated by the scan; only the wanted values become
 * trees, so memory is the file plus small trees whatever else the file holds
 * (a chat template, thousands of added tokens). NULL with err: "<path>: not a
 * JSON object", invalid JSON, "<path>: <key> is N bytes of JSON (at most M)",
 * or over the limit. */
cJSON *tp_json_read_keys(const char *path, size_t max_len, const char *const *keys, size_t max_value,
                         tp_ledger *led, size_t *charged, char *err);

#endif
