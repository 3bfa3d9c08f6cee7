/* yaml.c: tempo_config_load_yaml: a YAML file of `key: value` pairs.
 *
 * The keys are the option table's (config.c), the CLI flags with '-' -> '_'.
 * Values are parsed by tempo_config_set, so types and ranges are checked exactly
 * as for flags. A null value (`key:`, `~`, `null`) means the option's default;
 * for max_parallel_tokens that is "auto" (also accepted spelled out), for
 * max_cache_tokens the model's context length.
 *
 * The file is read completely and every value is checked before any is applied,
 * so a file with an error leaves the config as it was. Errors name the file, the
 * line and the key: "config.yaml:4: unknown key 'max_tokenz' (did you mean 'max_tokens'?)".
 */
#include "tempo.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>

#include "api/api.h"
#include "core/common.h"

typedef struct {
    char *key, *value; /* value NULL: null */
    int line;          /* of the key */
    int vline;         /* of the value */
} pair;

typedef struct {
    pair *v;
    int n, cap;
} pairs;

static void pairs_free(pairs *ps) {
    for (int i = 0; i < ps->n; i++) {
        free(ps->v[i].key);
        free(ps->v[i].value);
    }
    free(ps->v);
}

static bool is_null_scalar(const yaml_event_t *e) {
    if (e->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *s = (const char *)e->data.scalar.value;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

/* The option a mistyped key probably meant, or NULL. */
static const char *suggest(const char *key) {
    int n;
    const tempo_option_info *o = tempo_options(&n);
    char under[128];
    size_t i = 0;
    for (; key[i] && i + 1 < sizeof under; i++) under[i] = key[i] == '-' ? '_' : key[i];
    under[i] = 0;
    const char *best = NULL;
    int bd = 3;
    for (int k = 0; k < n; k++) {
        if (!strcasecmp(o[k].key, under)) return o[k].key;
        int d = edit_distance(under, o[k].key);
        if (d < bd) { bd = d; best = o[k].key; }
    }
    return best;
}

/* Apply one pair; err is the bare reason (the caller adds file:line: key). */
static int apply(tempo_config *c, const pair *p, char *err) {
    const char *v = p->value;
    bool is_auto = v && !strcasecmp(v, "auto");
    /* null (and "auto" for the width): the option's default */
    if (!v || (is_auto && !strcmp(p->key, "max_parallel_tokens"))) return tp_config_reset(c, p->key) ? tp_fail(err, "unknown key") : 0;
    char e[TP_ERR_LEN];
    if (tp_config_set(c, p->key, v, e) == 0) return 0;
    /* tempo_config_set speaks of the flag ("--max-tokens: expected ..."); here the key is named instead. */
    const char *reason = e;
    if (!strncmp(e, "--", 2) && strstr(e, ": ")) reason = strstr(e, ": ") + 2;
    return tp_fail(err, "%s", reason);
}

static const char *event_what(yaml_event_type_t t) {
    switch (t) {
    case YAML_SEQUENCE_START_EVENT: return "a list";
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_ALIAS_EVENT: return "an alias";
    default: return "something else";
    }
}

/* Parse the file into pairs. */
static int read_pairs(const char *path, FILE *f, pairs *ps, char *err) {
    yaml_parser_t yp;
    yaml_event_t e;
    int rc = -1, docs = 0;
    enum { TOP, IN_DOC, KEY } st = TOP;
    bool have_map = false;
    if (!yaml_parser_initialize(&yp)) return tp_fail(err, "%s: cannot start the YAML parser", path);
    yaml_parser_set_input_file(&yp, f);
    for (;;) {
        if (!yaml_parser_parse(&yp, &e)) {
            if (yp.error == YAML_READER_ERROR && ferror(f))
                tp_fail(err, "%s: cannot read: %s", path, strerror(errno));
            else if (yp.context)
                tp_fail(err, "%s:%d: YAML syntax error: %s (%s started on line %d)", path,
                        (int)yp.problem_mark.line + 1, yp.problem ? yp.problem : "malformed", yp.context,
                        (int)yp.context_mark.line + 1);
            else
                tp_fail(err, "%s:%d: YAML syntax error: %s", path, (int)yp.problem_mark.line + 1,
                        yp.problem ? yp.problem : "malformed");
            goto out;
        }
        int line = (int)e.start_mark.line + 1;
        yaml_event_type_t t = e.type;
        if (t == YAML_STREAM_END_EVENT) { yaml_event_delete(&e); rc = 0; goto out; }
        switch (st) {
        case TOP:
            if (t == YAML_DOCUMENT_START_EVENT) {
                if (++docs > 1) {
                    tp_fail(err, "%s:%d: more than one YAML document; put every option in one", path, line);
                    goto fail;
                }
                st = IN_DOC;
            }
            break;
        case IN_DOC:
            if (t == YAML_MAPPING_START_EVENT && !have_map) { have_map = true; st = KEY; }
            else if (t == YAML_DOCUMENT_END_EVENT) st = TOP;
            else if (t == YAML_SCALAR_EVENT && !have_map && is_null_scalar(&e)) have_map = true; /* empty document */
            else {
                tp_fail(err, "%s:%d: expected 'key: value' lines at the top level, got %s", path, line,
                        t == YAML_SCALAR_EVENT ? "a plain value" : event_what(t));
                goto fail;
            }
            break;
        case KEY: {
            if (t == YAML_MAPPING_END_EVENT) { st = IN_DOC; break; }
            if (t != YAML_SCALAR_EVENT) {
                tp_fail(err, "%s:%d: expected an option name, got %s", path, line, event_what(t));
                goto fail;
            }
            char *key = strdup((const char *)e.data.scalar.value);
            yaml_event_delete(&e);
            if (!key) {
                tp_fail(err, "%s: out of memory reading the file", path);
                goto out;
            }
            if (tempo_option_type(key) < 0) {
                const char *s = suggest(key);
                if (s) tp_fail(err, "%s:%d: unknown key '%s' (did you mean '%s'?)", path, line, key, s);
                else tp_fail(err, "%s:%d: unknown key '%s'", path, line, key);
                free(key);
                goto out;
            }
            for (int i = 0; i < ps->n; i++)
                if (!strcmp(ps->v[i].key, key)) {
                    tp_fail(err, "%s:%d: key '%s' is given twice (first on line %d)", path, line, key, ps->v[i].line);
                    free(key);
                    goto out;
                }
            if (!yaml_parser_parse(&yp, &e)) {
                free(key);
                tp_fail(err, "%s:%d: YAML syntax error: %s", path, (int)yp.problem_mark.line + 1,
                        yp.problem ? yp.problem : "malformed");
                goto out;
            }
            int vline = (int)e.start_mark.line + 1;
            if (e.type != YAML_SCALAR_EVENT) {
                tp_fail(err, "%s:%d: %s: expected a single value, got %s", path, vline, key, event_what(e.type));
                free(key);
                goto fail;
            }
            if (ps->n == ps->cap) {
                int cap = ps->cap ? 2 * ps->cap : 16;
                pair *more = realloc(ps->v, (size_t)cap * sizeof *ps->v);
                if (!more) {
                    tp_fail(err, "%s: out of memory reading the file", path);
                    free(key);
                    goto fail;
                }
                ps->v = more;
                ps->cap = cap;
            }
            char *value = is_null_scalar(&e) ? NULL : strdup((const char *)e.data.scalar.value);
            if (!is_null_scalar(&e) && !value) {
                tp_fail(err, "%s: out of memory reading the file", path);
                free(key);
                goto fail;
            }
            pair *p = &ps->v[ps->n++];
            p->key = key;
            p->value = value;
            p->line = line;
            p->vline = vline;
            break;
        }
        }
        yaml_event_delete(&e);
        continue;
    fail:
        yaml_event_delete(&e);
        goto out;
    }
out:
    yaml_parser_delete(&yp);
    return rc;
}

static int load_yaml(tempo_config *c, const char *path, char *err) {
    struct stat stt;
    if (!path || !*path) return tp_fail(err, "no config file given");
    if (stat(path, &stt) != 0) return tp_fail(err, "%s: cannot read: %s", path, strerror(errno));
    if (S_ISDIR(stt.st_mode)) return tp_fail(err, "%s: cannot read: it is a directory", path);
    FILE *f = fopen(path, "rb");
    if (!f) return tp_fail(err, "%s: cannot read: %s", path, strerror(errno));
    pairs ps = { 0 };
    int rc = read_pairs(path, f, &ps, err);
    fclose(f);

    /* Check every value on a scratch config first, so an error changes nothing. */
    if (rc == 0) {
        tempo_config scratch;
        tempo_config_init(&scratch);
        char e[TP_ERR_LEN];
        for (int i = 0; i < ps.n && rc == 0; i++)
            if (apply(&scratch, &ps.v[i], e)) rc = tp_fail(err, "%s:%d: %s: %s", path, ps.v[i].vline, ps.v[i].key, e);
        tempo_config_free(&scratch);
    }
    if (rc == 0)
        for (int i = 0; i < ps.n; i++) apply(c, &ps.v[i], NULL);
    pairs_free(&ps);
    return rc;
}

int tempo_config_load_yaml(tempo_config *c, const char *path, tempo_error *err) {
    char msg[TEMPO_ERR_LEN];
    if (load_yaml(c, path, msg) == 0) { tp_ok(err); return 0; }
    return tp_set_error(err, strstr(msg, "cannot read") ? TEMPO_ERR_IO : TEMPO_ERR_ARG, "%s", msg);
}
