/* test_json.c: the streaming JSON scanner and the bounded cJSON parse
 * (format/json.h): RFC 8259 exactly, in-place unescaping, nesting bounded
 * without recursion, and a tree charged to the ledger before it is built. */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/common.h"
#include "format/json.h"

/* Scan a whole document; on failure put the scanner's message in why. */
static bool scan_ok(const char *text, char *why, size_t cap) {
    char *buf = strdup(text);
    tp_jscan s;
    tp_js_init(&s, buf, strlen(buf));
    bool ok = tp_js_skip(&s) && tp_js_finish(&s);
    if (!ok) snprintf(why, cap, "byte %zu: %s", s.at, s.msg ? s.msg : "?");
    free(buf);
    return ok;
}

TEST(json_scanner_accepts_rfc8259_and_nothing_else) {
    const char *good[] = {
        "0", "-0", "-0.5e+10", "1E-3", "\"\"", "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"", "\"\\u00e9\\ud83d\\ude00\"",
        "true", "false", "null", "[]", "{}", " [ 1 , [ ] , { \"a\" : { } } ] ", "{\"a\":[1,2,{\"b\":null}],\"c\":\"d\"}",
    };
    char why[128];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECK_MSG(scan_ok(good[i], why, sizeof why), "rejected %s: %s", good[i], why);
    struct { const char *text, *why; } bad[] = {
        { "", "expected a value" },
        { "[1,]", "expected a value" },
        { "{\"a\":1,}", "expected an object key" },
        { "{\"a\" 1}", "expected ':'" },
        { "{a:1}", "expected an object key" },
        { "01", "text after the JSON value" },
        { "1.", "bad number" },
        { "-", "bad number" },
        { ".5", "expected a value" },
        { "1e", "bad number" },
        { "\"a\nb\"", "control character" },
        { "\"\\x\"", "bad escape" },
        { "\"\\u12g4\"", "bad \\u escape" },
        { "\"\\ud800\"", "lone high surrogate" },
        { "\"\\ud800\\u0041\"", "lone high surrogate" },
        { "\"\\udc00\"", "lone low surrogate" },
        { "\"abc", "unterminated" },
        { "tru", "expected a value" },
        { "nul", "expected a value" },
        { "[1] [2]", "text after" },
        { "[1 2]", "expected ',' or ']'" },
        { "{\"a\":1 \"b\":2}", "expected ',' or '}'" },
        { "1234567890123456789012345678901234567890123456789012345678901234", "longer than 63" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bool ok = scan_ok(bad[i].text, why, sizeof why);
        CHECK_MSG(!ok && strstr(why, bad[i].why), "'%s': %s (want '%s')", bad[i].text, ok ? "accepted" : why,
                  bad[i].why);
    }
}

TEST(json_scanner_nesting_is_bounded_without_recursion) {
    /* 256 levels are fine, 257 are not; a million open brackets cost no stack */
    size_t n = TP_JSON_MAX_DEPTH;
    char *t = malloc(2 * n + 2);
    memset(t, '[', n);
    memset(t + n, ']', n);
    t[2 * n] = 0;
    char why[128];
    CHECK_MSG(scan_ok(t, why, sizeof why), "%s", why);
    free(t);
    n = TP_JSON_MAX_DEPTH + 1;
    t = malloc(2 * n + 2);
    memset(t, '[', n);
    memset(t + n, ']', n);
    t[2 * n] = 0;
    CHECK(!scan_ok(t, why, sizeof why) && strstr(why, "nested too deeply"));
    free(t);
    n = 1000000;
    t = malloc(n + 1);
    memset(t, '[', n);
    t[n] = 0;
    CHECK(!scan_ok(t, why, sizeof why) && strstr(why, "byte 256: nested too deeply"));
    /* and cJSON is never reached with it */
    char err[TP_ERR_LEN];
    size_t charged = 0;
    CHECK(tp_json_parse("deep.json", t, n, NULL, &charged, err) == NULL);
    CHECK_MSG(strstr(err, "deep.json: not valid JSON at byte 256: nested too deeply") != NULL, "%s", err);
    free(t);
}

TEST(json_scanner_reads_members_and_unescapes_in_place) {
    char buf[] = "{\"k\\u00e9y\": \"v\\ud83d\\ude00\\n\", \"n\": -12.5e1, \"b\": [true, false], \"z\": \"a\\u0000b\"}";
    tp_jscan s;
    tp_js_init(&s, buf, strlen(buf));
    bool more;
    char *k, *v;
    size_t kl, vl;
    REQUIRE(tp_js_open(&s, '{', &more) && more);
    REQUIRE(tp_js_key(&s, &k, &kl));
    CHECK(kl == 4 && memcmp(k, "k\xc3\xa9y", 4) == 0 && k[kl] == 0);
    REQUIRE(tp_js_string(&s, &v, &vl));
    CHECK(vl == 6 && memcmp(v, "v\xf0\x9f\x98\x80\n", 6) == 0);
    REQUIRE(tp_js_next(&s, '}', &more) && more);
    double d;
    REQUIRE(tp_js_key(&s, &k, &kl) && tp_js_number(&s, &d));
    CHECK(d == -125.0);
    REQUIRE(tp_js_next(&s, '}', &more) && more);
    bool b1, b2, m2;
    REQUIRE(tp_js_key(&s, &k, &kl) && tp_js_open(&s, '[', &m2) && m2 && tp_js_bool(&s, &b1));
    REQUIRE(tp_js_next(&s, ']', &m2) && m2 && tp_js_bool(&s, &b2) && tp_js_next(&s, ']', &m2) && !m2);
    CHECK(b1 && !b2);
    REQUIRE(tp_js_next(&s, '}', &more) && more);
    REQUIRE(tp_js_key(&s, &k, &kl) && tp_js_string(&s, &v, &vl));
    CHECK(vl == 3 && v[0] == 'a' && v[1] == 0 && v[2] == 'b'); /* \u0000 keeps its place: lengths, not strlen */
    REQUIRE(tp_js_next(&s, '}', &more) && !more);
    CHECK(tp_js_finish(&s));
}

TEST(json_parse_charges_its_tree_before_building_it) {
    /* 10001 values: about 10000 x 80 bytes of cJSON nodes */
    size_t n = 10000;
    char *t = malloc(2 * n + 2);
    t[0] = '[';
    for (size_t i = 0; i < n; i++) { t[1 + 2 * i] = '0'; t[2 + 2 * i] = i + 1 < n ? ',' : ']'; }
    t[2 * n + 1] = 0;
    size_t len = 2 * n + 1;
    char err[TP_ERR_LEN];
    tp_ledger led = { .limit = 200000 };
    size_t charged = 0;
    CHECK(tp_json_parse("a.json", t, len, &led, &charged, err) == NULL);
    CHECK_MSG(strstr(err, "a.json: parsing 10001 JSON values needs") && strstr(err, "--max-memory-gb"), "%s", err);
    CHECK(led.used == 0);
    led.limit = 0;
    cJSON *j = tp_json_parse("a.json", t, len, &led, &charged, err);
    REQUIRE(j);
    CHECK(cJSON_GetArraySize(j) == (int)n);
    CHECK(charged == tp_json_tree_bytes(n + 1, 0, 0) && led.used == charged);
    CHECK(charged >= (n + 1) * sizeof(cJSON)); /* a real bound: at least the nodes themselves */
    cJSON_Delete(j);
    tp_ledger_release(&led, charged);
    CHECK(led.used == 0 && led.peak == charged);
    free(t);
}
