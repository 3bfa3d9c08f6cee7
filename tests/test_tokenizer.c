/* test_tokenizer.c: the tokenizers against llama.cpp's and llama2.c's test vectors,
 * decoding round trips, special tokens, the EOG set, and tokenizer.json loading. */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "format/gguf.h"
#include "tools/gguf_write.h"
#include "tokenizer/tokenizer.h"

#define SPM_VOCAB SHARED_DIR "/tokenizer-tests/llama.cpp/ggml-vocab-llama-spm.gguf"
#define BPE_VOCAB SHARED_DIR "/tokenizer-tests/generated/ggml-vocab-llama3-from-tokenizer-json.gguf"
#define LLAMA3_HF SHARED_DIR "/tokenizer-tests/llama3-hf"

static tokenizer *load_gguf_tok(const char *path) {
    char err[TP_ERR_LEN] = "";
    gguf_file *f = tp_gguf_open(path, err);
    if (!f) { fprintf(stderr, "  %s\n", err); return NULL; }
    tokenizer *t = tp_tokenizer_from_gguf(f, err);
    if (!t) fprintf(stderr, "  %s\n", err);
    tp_gguf_close(f); /* the tokenizer keeps its own copy of everything */
    return t;
}

/* llama.cpp's .inp/.out pair: inputs separated by "\n__ggml_vocab_test__\n", one
 * output line of ids per input. */
typedef struct {
    char *inp, *out;
    char *text[64];
    char *ids[64];
    int n;
} cases;

static bool load_cases(cases *c, const char *inp_path, const char *out_path) {
    char err[TP_ERR_LEN];
    size_t n;
    memset(c, 0, sizeof *c);
    c->inp = tp_read_file(inp_path, &n, err);
    c->out = tp_read_file(out_path, &n, err);
    if (!c->inp || !c->out) return false;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    char *p = c->inp, *q;
    while ((q = strstr(p, sep)) && c->n < 64) {
        *q = 0;
        c->text[c->n++] = p;
        p = q + strlen(sep);
    }
    char *line = c->out;
    for (int i = 0; i < c->n; i++) {
        char *nl = strchr(line, '\n');
        if (!nl) return false;
        *nl = 0;
        c->ids[i] = line;
        line = nl + 1;
    }
    return true;
}

static void free_cases(cases *c) { free(c->inp); free(c->out); }

static bool ids_equal(const int32_t *a, int na, const int *b, int nb) {
    if (na != nb) return false;
    for (int i = 0; i < na; i++) if (a[i] != b[i]) return false;
    return true;
}

static void print_ids(const char *what, const int32_t *a, int n) {
    fprintf(stderr, "    %s:", what);
    for (int i = 0; i < n; i++) fprintf(stderr, " %d", a[i]);
    fputc('\n', stderr);
}

/* Run all cases; spm_prefix: decoding gives a leading space (the "▁" prefix). */
static void run_cases(const tokenizer *t, const char *inp, const char *out, bool spm_prefix) {
    cases c;
    REQUIRE(load_cases(&c, inp, out));
    CHECK_INT_EQ(c.n, 46);
    int32_t ids[1024];
    int want[1024];
    for (int i = 0; i < c.n; i++) {
        int n = tp_tokenizer_encode(t, c.text[i], false, false, ids, 1024);
        int nw = test_parse_ints(c.ids[i], want, 1024);
        if (!ids_equal(ids, n, want, nw)) {
            test_fail_at(__FILE__, __LINE__, "case %d \"%.40s\": ids differ", i, c.text[i]);
            print_ids("got ", ids, n);
            print_ids("want", (const int32_t *)want, nw);
            continue;
        }
        /* decoding gives the text back (SPM: with the added leading space) */
        char *d = tp_tokenizer_decode(t, ids, n);
        char expect[2048];
        snprintf(expect, sizeof expect, "%s%s", spm_prefix && c.text[i][0] ? " " : "", c.text[i]);
        CHECK_MSG(strcmp(d, expect) == 0, "case %d: decode gives \"%s\"", i, d);
        free(d);
    }
    free_cases(&c);
}

TEST(tokenizer_spm_llamacpp_vectors) {
    tokenizer *t = load_gguf_tok(SPM_VOCAB);
    REQUIRE(t);
    CHECK(tp_tokenizer_kind(t) == TOK_SPM);
    CHECK_INT_EQ(tp_tokenizer_vocab_size(t), 32000);
    run_cases(t, SPM_VOCAB ".inp", SPM_VOCAB ".out", true);
    tp_tokenizer_free(t);
}

TEST(tokenizer_bpe_llamacpp_vectors) {
    double t0 = tp_now();
    tokenizer *t = load_gguf_tok(BPE_VOCAB);
    double t1 = tp_now();
    REQUIRE(t);
    fprintf(stderr, "    Llama 3 vocab from GGUF (open + build): %.3f s\n", t1 - t0);
    CHECK(tp_tokenizer_kind(t) == TOK_BPE);
    CHECK_INT_EQ(tp_tokenizer_vocab_size(t), 128256);
    run_cases(t, SHARED_DIR "/tokenizer-tests/llama.cpp/ggml-vocab-llama-bpe.gguf.inp",
              SHARED_DIR "/tokenizer-tests/llama.cpp/ggml-vocab-llama-bpe.gguf.out", false);
    tp_tokenizer_free(t);
}

/* JSON string unescape for the llama2.c vectors (\n \t \" \\ \uXXXX) */
static size_t json_unescape(const char *s, const char *end, char *o) {
    size_t m = 0;
    while (s < end) {
        if (*s != '\\') { o[m++] = *s++; continue; }
        s++;
        switch (*s) {
        case 'n': o[m++] = '\n'; break;
        case 't': o[m++] = '\t'; break;
        case 'r': o[m++] = '\r'; break;
        case 'u': {
            unsigned cp = (unsigned)strtoul((char[5]){ s[1], s[2], s[3], s[4], 0 }, NULL, 16);
            if (cp < 0x80) o[m++] = (char)cp;
            else if (cp < 0x800) { o[m++] = (char)(0xC0 | cp >> 6); o[m++] = (char)(0x80 | (cp & 63)); }
            else { o[m++] = (char)(0xE0 | cp >> 12); o[m++] = (char)(0x80 | (cp >> 6 & 63));
                   o[m++] = (char)(0x80 | (cp & 63)); }
            s += 4;
            break;
        }
        default: o[m++] = *s;
        }
        s++;
    }
    o[m] = 0;
    return m;
}

TEST(tokenizer_llama2c_vectors) {
    tokenizer *t = load_gguf_tok(SPM_VOCAB);
    REQUIRE(t);
    char err[TP_ERR_LEN];
    size_t n;
    char *tsv = tp_read_file(SHARED_DIR "/tokenizer-tests/llama2c/llama2-tokenizer-vectors.tsv", &n, err);
    REQUIRE(tsv);
    int cases = 0;
    for (char *line = strtok(tsv, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        char *tab = strchr(line, '\t');
        REQUIRE(tab && line[0] == '"' && tab[-1] == '"');
        char text[1024];
        json_unescape(line + 1, tab - 1, text);
        int want[512], nw = test_parse_ints(tab + 1, want, 512);
        int32_t ids[512];
        int k = tp_tokenizer_encode(t, text, true, false, ids, 512);
        CHECK_MSG(ids_equal(ids, k, want, nw), "llama2.c vector \"%.40s\" differs", text);
        cases++;
    }
    CHECK_INT_EQ(cases, 5);
    free(tsv);
    tp_tokenizer_free(t);
}

TEST(tokenizer_stories260k_prompt) {
    tokenizer *t = load_gguf_tok(SHARED_DIR "/models/stories260K.gguf");
    REQUIRE(t);
    CHECK_INT_EQ(tp_tokenizer_vocab_size(t), 512);
    CHECK(tp_tokenizer_adds_bos(t));
    int32_t ids[16];
    int n = tp_tokenizer_encode(t, "Once upon a time", true, true, ids, 16);
    const int want[] = { 1, 403, 407, 261, 378 };
    CHECK(ids_equal(ids, n, want, 5));
    char *d = tp_tokenizer_decode(t, ids, n);
    CHECK(strcmp(d, " Once upon a time") == 0); /* BOS hidden, "▁" prefix kept */
    free(d);
    CHECK(tp_tokenizer_is_eog(t, 2));
    CHECK(!tp_tokenizer_is_eog(t, 1));
    tp_tokenizer_free(t);
}

TEST(tokenizer_spm_pieces_and_specials) {
    tokenizer *t = load_gguf_tok(SPM_VOCAB);
    REQUIRE(t);
    CHECK_INT_EQ(tp_tokenizer_bos(t), 1);
    CHECK_INT_EQ(tp_tokenizer_eos(t), 2);
    char buf[64];
    int n = tp_tokenizer_piece(t, 13, false, buf, sizeof buf); /* <0x0A> */
    CHECK(n == 1 && buf[0] == '\n');
    int the = tp_tokenizer_find(t, "\xe2\x96\x81the");
    REQUIRE(the >= 0);
    n = tp_tokenizer_piece(t, the, false, buf, sizeof buf);
    CHECK(n == 4 && memcmp(buf, " the", 4) == 0);
    CHECK_INT_EQ(tp_tokenizer_piece(t, the, false, buf, 2), -4);
    CHECK_INT_EQ(tp_tokenizer_piece(t, 1, false, buf, sizeof buf), 0);
    n = tp_tokenizer_piece(t, 1, true, buf, sizeof buf);
    CHECK(n == 3 && memcmp(buf, "<s>", 3) == 0);
    CHECK(tp_tokenizer_token_type(t, 1) == TOKT_CONTROL);
    CHECK(strcmp(tp_tokenizer_token_text(t, 2), "</s>") == 0);
    CHECK(tp_tokenizer_token_text(t, 32000) == NULL);

    /* byte fallback: the llama emoji is 4 <0xNN> tokens and decodes back */
    int32_t ids[64];
    n = tp_tokenizer_encode(t, "\xf0\x9f\xa6\x99", false, false, ids, 64);
    const int want[] = { 29871, 243, 162, 169, 156 };
    CHECK(ids_equal(ids, n, want, 5));
    char *d = tp_tokenizer_decode(t, ids, n);
    CHECK(strcmp(d, " \xf0\x9f\xa6\x99") == 0);
    free(d);

    /* BOS, and special tokens in the text only with parse_special */
    n = tp_tokenizer_encode(t, "Hello", true, false, ids, 64);
    const int hello[] = { 1, 15043 };
    CHECK(ids_equal(ids, n, hello, 2));
    n = tp_tokenizer_encode(t, "<s>Hello</s>", false, true, ids, 64);
    const int sp[] = { 1, 15043, 2 };
    CHECK(ids_equal(ids, n, sp, 3));
    d = tp_tokenizer_decode_special(t, ids, n, true);
    CHECK(strcmp(d, "<s> Hello</s>") == 0);
    free(d);
    n = tp_tokenizer_encode(t, "<s>", false, false, ids, 64);
    CHECK(n > 1 && ids[0] != 1); /* plain text */
    d = tp_tokenizer_decode(t, ids, n);
    CHECK(strcmp(d, " <s>") == 0);
    free(d);

    /* the count needed is returned when out is too small */
    CHECK_INT_EQ(tp_tokenizer_encode(t, "Hello world", false, false, ids, 1), 2);
    CHECK_INT_EQ(tp_tokenizer_encode(t, "Hello world", false, false, NULL, 0), 2);
    CHECK_INT_EQ(tp_tokenizer_encode(t, "", true, false, ids, 64), 1);
    tp_tokenizer_free(t);
}

static void check_llama3_specials(const tokenizer *t) {
    CHECK_INT_EQ(tp_tokenizer_bos(t), 128000);
    CHECK_INT_EQ(tp_tokenizer_eos(t), 128001);
    CHECK_INT_EQ(tp_tokenizer_eot(t), 128009);
    CHECK(tp_tokenizer_adds_bos(t));
    CHECK(tp_tokenizer_is_eog(t, 128001));
    CHECK(tp_tokenizer_is_eog(t, 128009)); /* <|eot_id|> */
    /* Llama 3.0 has no <|eom_id|> (128008 is a reserved token): the set is exactly these two */
    int n_eog = 0;
    for (int i = 0; i < tp_tokenizer_vocab_size(t); i++) n_eog += tp_tokenizer_is_eog(t, i);
    CHECK_INT_EQ(n_eog, 2);
    CHECK(!tp_tokenizer_is_eog(t, -1) && !tp_tokenizer_is_eog(t, 128256));
}

TEST(tokenizer_bpe_pieces_and_specials) {
    tokenizer *t = load_gguf_tok(BPE_VOCAB);
    REQUIRE(t);
    check_llama3_specials(t);
    char buf[64];
    CHECK(tp_tokenizer_piece(t, 220, false, buf, sizeof buf) == 1 && buf[0] == ' ');  /* "Ġ" */
    CHECK(tp_tokenizer_piece(t, 198, false, buf, sizeof buf) == 1 && buf[0] == '\n'); /* "Ċ" */
    CHECK(strcmp(tp_tokenizer_token_text(t, 22691), "\xc4\xa0Hello") == 0);          /* "ĠHello" */

    int32_t ids[64];
    int n = tp_tokenizer_encode(t, "<|eot_id|>", false, true, ids, 64);
    CHECK(n == 1 && ids[0] == 128009);
    char *d = tp_tokenizer_decode_special(t, ids, n, true);
    CHECK(strcmp(d, "<|eot_id|>") == 0);
    free(d);
    d = tp_tokenizer_decode(t, ids, n);
    CHECK(strcmp(d, "") == 0);
    free(d);
    n = tp_tokenizer_encode(t, "<|eot_id|>", false, false, ids, 64);
    CHECK(n > 1);
    d = tp_tokenizer_decode(t, ids, n);
    CHECK(strcmp(d, "<|eot_id|>") == 0);
    free(d);

    const char *chat = "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>";
    n = tp_tokenizer_encode(t, chat, true, true, ids, 64);
    const int want[] = { 128000, 128006, 882, 128007, 271, 13347, 1070, 128009 };
    CHECK(ids_equal(ids, n, want, 8));
    d = tp_tokenizer_decode_special(t, ids + 1, n - 1, true);
    CHECK(strcmp(d, chat) == 0);
    free(d);

    /* bytes that are not UTF-8 become U+FFFD before splitting (as llama.cpp) */
    n = tp_tokenizer_encode(t, "a\xff" "b", false, false, ids, 64);
    REQUIRE(n > 0);
    d = tp_tokenizer_decode(t, ids, n);
    CHECK(strcmp(d, "a\xef\xbf\xbd" "b") == 0);
    free(d);
    tp_tokenizer_free(t);
}

TEST(tokenizer_gguf_errors) {
    char err[TP_ERR_LEN] = "";
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char path[512];
    snprintf(path, sizeof path, "%s/notok.gguf", dir);
    gguf_writer *w = tp_gguf_writer_new(32);
    tp_gguf_w_str(w, "tokenizer.ggml.model", "llama");
    REQUIRE(tp_gguf_writer_save(w, path, err) == 0);
    tp_gguf_writer_free(w);
    gguf_file *f = tp_gguf_open(path, err);
    REQUIRE(f);
    tokenizer *t = tp_tokenizer_from_gguf(f, err);
    CHECK(!t);
    CHECK_MSG(strstr(err, "notok.gguf: tokenizer.ggml.tokens missing") != NULL, "err: %s", err);
    tp_gguf_close(f);

    snprintf(path, sizeof path, "%s/bpe.gguf", dir);
    w = tp_gguf_writer_new(32);
    const char *toks[] = { "a", "b", "ab" };
    tp_gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    tp_gguf_w_str(w, "tokenizer.ggml.pre", "qwen2");
    tp_gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, 3);
    REQUIRE(tp_gguf_writer_save(w, path, err) == 0);
    tp_gguf_writer_free(w);
    f = tp_gguf_open(path, err);
    REQUIRE(f);
    t = tp_tokenizer_from_gguf(f, err);
    CHECK(!t);
    CHECK_MSG(strstr(err, "tokenizer.ggml.pre 'qwen2' not supported") != NULL, "err: %s", err);
    tp_gguf_close(f);
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    CHECK(system(path) == 0);
    free(dir);
}

/* Random mixtures of words, digits, contractions, scripts, emoji and exotic
 * whitespace (U+0085, U+1680, U+200B, U+202F, form feed), tokenized by two
 * independent implementations: Hugging Face's tokenizers.js 0.2.0 on Llama 3's
 * tokenizer.json (no special tokens) and llama-tokenizer-js 1.2.2 for Llama 2
 * (with BOS). Tempo agreed with both on 3000 such strings each; these are a sample. */
typedef struct {
    const char *text, *ids;
} ref_case;
static const ref_case bpe_ref[] = {
    { "\xe1\x9a\x80\xe2\x80\x8b\xe2\x80\x8b\x0c\xc2\x85\xe2\x80\xaf\xe1\x9a\x80\xe1\x9a\x80\xe2\x80\xaf",
      "157 248 222 88996 200 116360 113012 157 248 222 157 248 222 113012" },
    { "\xc2\x85\xe1\x9a\x80\xe2\x80\x8b\xe2\x80\x8b\x0c",
      "116360 157 248 222 88996 200" },
    { "\xe1\x9a\x80\xe2\x80\x8b\x0c\xe2\x80\xaf\xe2\x80\xaf",
      "157 248 222 16067 200 113012 113012" },
    { "\xe2\x80\x8b\x0c\x0c\xe2\x80\x8b\xe2\x80\x8b\x0c\xe2\x80\xaf\xe1\x9a\x80\x0c",
      "16067 200 200 88996 200 113012 157 248 222 200" },
    { "    'll'd\xc3\xa9 you\xf0\x9f\xa6\x99" "F\xc3\xbchrer<",
      "262 364 657 4265 978 499 9468 99 247 37 51853 261 27" },
    { "\xe3\x80\x80...'S#I(\xcf\x82<|==",
      "23249 74438 50 2 40 7 46742 27 91 419" },
    { "==   \xd0\xbd\xd0\xb5\xd1\x89\xd0\xbe" "12345'Ve\xe0\xb8\x82",
      "419 256 19175 102118 4513 1774 6 43712 48939" },
    { "\xd9\xa3y1234F\xc3\xbchrer\xcc\x81\x0d\x0a_\xdf\x81" "B",
      "117413 88 4513 19 37 51853 261 54939 319 62 155 223 33" },
    { "@    you'Ve\xcc\x81",
      "31 262 499 6 43712 54939" },
    { "%\xd0\x91\xd1\x8a\xd0\xbb\xd0\xb3\xd0\xb0\xd1\x80\xd1\x81\xd0\xba\xd0\xb8\xef\xbe\x9d\xc2\xbdthe",
      "4 61432 34694 3114 112203 80112 120413 27154 1820" },
    { "!!x'm\xf0\x9f\x9a\x80're",
      "3001 87 2846 9468 248 222 6 265" },
    { "you\xe1\x9e\xb6hello\xe2\x80\x83'Ve",
      "9514 86675 15339 116503 6 43712" },
};
static const ref_case spm_ref[] = {
    { "\xe1\x9a\x80\xe2\x80\x8b\xe2\x80\x8b\x0c\xc2\x85\xe2\x80\xaf\xe1\x9a\x80\xe1\x9a\x80\xe2\x80\xaf",
      "1 29871 228 157 131 30166 30166 15 197 136 30262 228 157 131 228 157 131 30262" },
    { "\xc2\x85\xe1\x9a\x80\xe2\x80\x8b\xe2\x80\x8b\x0c",
      "1 29871 197 136 228 157 131 30166 30166 15" },
    { "\xe1\x9a\x80\xe2\x80\x8b\x0c\xe2\x80\xaf\xe2\x80\xaf",
      "1 29871 228 157 131 30166 15 30262 30262" },
    { "\xe2\x80\x8b\x0c\x0c\xe2\x80\x8b\xe2\x80\x8b\x0c\xe2\x80\xaf\xe1\x9a\x80\x0c",
      "1 29871 30166 15 15 30166 30166 15 30262 228 157 131 15" },
    { "    'll'd\xc3\xa9 you\xf0\x9f\xa6\x99" "F\xc3\xbchrer<",
      "1 268 525 645 29915 29881 29948 366 243 162 169 156 29943 4000 261 29966" },
    { "\xe3\x80\x80...'S#I(\xcf\x82<|==",
      "1 29871 30358 856 29915 29903 29937 29902 29898 30145 29966 29989 1360" },
    { "==   \xd0\xbd\xd0\xb5\xd1\x89\xd0\xbe" "12345'Ve\xe0\xb8\x82",
      "1 1275 259 1538 4851 29896 29906 29941 29946 29945 29915 29963 29872 31310" },
    { "\xd9\xa3y1234F\xc3\xbchrer\xcc\x81\x0d\x0a_\xdf\x81" "B",
      "1 29871 220 166 29891 29896 29906 29941 29946 29943 4000 261 30103 30004 13 29918 226 132 29933" },
    { "@    you'Ve\xcc\x81",
      "1 732 1678 366 29915 29963 29872 30103" },
    { "%\xd0\x91\xd1\x8a\xd0\xbb\xd0\xb3\xd0\xb0\xd1\x80\xd1\x81\xd0\xba\xd0\xb8\xef\xbe\x9d\xc2\xbdthe",
      "1 1273 30031 29713 1305 242 193 160 30226 1552" },
    { "!!x'm\xf0\x9f\x9a\x80're",
      "1 21443 29916 29915 29885 243 162 157 131 29915 276" },
    { "you\xe1\x9e\xb6hello\xe2\x80\x83'Ve",
      "1 366 31324 12199 30363 29915 29963 29872" },
};

static void check_ref(const tokenizer *t, const ref_case *rc, int n, bool bos) {
    int32_t ids[256];
    int want[256];
    for (int i = 0; i < n; i++) {
        int k = tp_tokenizer_encode(t, rc[i].text, bos, false, ids, 256);
        int nw = test_parse_ints(rc[i].ids, want, 256);
        CHECK_MSG(ids_equal(ids, k, want, nw), "reference case %d differs", i);
    }
}

TEST(tokenizer_independent_references) {
    tokenizer *t = load_gguf_tok(BPE_VOCAB);
    REQUIRE(t);
    check_ref(t, bpe_ref, (int)(sizeof bpe_ref / sizeof bpe_ref[0]), false);
    tp_tokenizer_free(t);
    t = load_gguf_tok(SPM_VOCAB);
    REQUIRE(t);
    check_ref(t, spm_ref, (int)(sizeof spm_ref / sizeof spm_ref[0]), true);
    tp_tokenizer_free(t);
}

/* ---------- tokenizer.json ---------- */

TEST(tokenizer_hf_llama3_matches_gguf) {
    char err[TP_ERR_LEN] = "";
    double t0 = tp_now();
    tokenizer *h = tp_tokenizer_from_hf(LLAMA3_HF, err);
    double t1 = tp_now();
    if (!h) fprintf(stderr, "  %s\n", err);
    REQUIRE(h);
    fprintf(stderr, "    Llama 3 tokenizer.json load: %.3f s\n", t1 - t0);
    tokenizer *g = load_gguf_tok(BPE_VOCAB);
    REQUIRE(g);
    check_llama3_specials(h);
    CHECK_INT_EQ(tp_tokenizer_vocab_size(h), tp_tokenizer_vocab_size(g));
    int diff_text = 0, diff_eog = 0, diff_type = 0;
    for (int i = 0; i < tp_tokenizer_vocab_size(g); i++) {
        diff_text += strcmp(tp_tokenizer_token_text(h, i), tp_tokenizer_token_text(g, i)) != 0;
        diff_eog += tp_tokenizer_is_eog(h, i) != tp_tokenizer_is_eog(g, i);
        diff_type += tp_tokenizer_token_type(h, i) != tp_tokenizer_token_type(g, i);
    }
    CHECK_INT_EQ(diff_text, 0);
    CHECK_INT_EQ(diff_eog, 0);
    CHECK_INT_EQ(diff_type, 0);
    run_cases(h, SHARED_DIR "/tokenizer-tests/llama.cpp/ggml-vocab-llama-bpe.gguf.inp",
              SHARED_DIR "/tokenizer-tests/llama.cpp/ggml-vocab-llama-bpe.gguf.out", false);
    int32_t a[64], b[64];
    const char *s = "<|begin_of_text|>Hello<|eot_id|> world";
    int na = tp_tokenizer_encode(h, s, true, true, a, 64), nb = tp_tokenizer_encode(g, s, true, true, b, 64);
    CHECK(na > 0 && ids_equal(a, na, (const int *)b, nb));
    tp_tokenizer_free(h);
    tp_tokenizer_free(g);
}

static bool write_file(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    fputs(s, f);
    return fclose(f) == 0;
}

/* A tiny byte-level BPE tokenizer.json; merges and ignore_merges vary, and the
 * BOS template is either the post-processor itself or inside a Sequence (Llama 3.1). */
static char *tiny_json(const char *merges, bool ignore_merges, bool seq_pp) {
    static const char tmpl[] = "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
                               "{\"id\":\"<|end|>\"}},{\"Sequence\":{\"id\":\"A\"}}]}";
    char pp[512];
    if (seq_pp) snprintf(pp, sizeof pp, "{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\"},%s]}", tmpl);
    else snprintf(pp, sizeof pp, "%s", tmpl);
    static const char fmt[] =
        "{\"version\":\"1.0\",\"normalizer\":null,"
        "\"added_tokens\":[{\"id\":7,\"content\":\"<|end|>\",\"special\":true},"
        "{\"id\":8,\"content\":\"<x>\",\"special\":false}],"
        "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
        "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"%s\"},\"behavior\":\"Isolated\",\"invert\":false},"
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]},"
        "\"post_processor\":%s,"
        "\"decoder\":{\"type\":\"ByteLevel\"},"
        "\"model\":{\"type\":\"BPE\",\"ignore_merges\":%s,"
        "\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"abc\":4,\"\\u0120\":5,\"ac\":6},"
        "\"merges\":%s}}";
    /* the regex, escaped for JSON */
    const char *re = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| "
                     "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+";
    size_t n = sizeof fmt + strlen(re) + strlen(pp) + strlen(merges) + 16;
    char *s = malloc(n);
    snprintf(s, n, fmt, re, pp, ignore_merges ? "true" : "false", merges);
    return s;
}

static tokenizer *tiny_tok(const char *dir, const char *merges, bool ignore_merges, bool seq_pp, char *err) {
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    char *j = tiny_json(merges, ignore_merges, seq_pp);
    bool ok = write_file(path, j);
    free(j);
    return ok ? tp_tokenizer_from_hf(dir, err) : NULL;
}

TEST(tokenizer_hf_tiny_merge_forms) {
    char err[TP_ERR_LEN] = "";
    char *dir = test_tmpdir();
    REQUIRE(dir);
    int32_t ids[16];
    const char *forms[2] = { "[\"a b\",\"ab c\"]", "[[\"a\",\"b\"],[\"ab\",\"c\"]]" };
    for (int k = 0; k < 2; k++) {
        tokenizer *t = tiny_tok(dir, forms[k], false, k == 1, err);
        if (!t) fprintf(stderr, "  %s\n", err);
        REQUIRE(t);
        CHECK_INT_EQ(tp_tokenizer_vocab_size(t), 9);
        int n = tp_tokenizer_encode(t, "abcab", false, false, ids, 16);
        const int w1[] = { 4, 3 };
        CHECK_MSG(ids_equal(ids, n, w1, 2), "merge form %d", k);
        n = tp_tokenizer_encode(t, "ac", false, false, ids, 16); /* no merge a+c: two tokens */
        const int w2[] = { 0, 2 };
        CHECK(ids_equal(ids, n, w2, 2));
        /* BOS from the post-processor template; user-defined tokens split out always */
        CHECK_INT_EQ(tp_tokenizer_bos(t), 7);
        CHECK(tp_tokenizer_adds_bos(t));
        CHECK(tp_tokenizer_is_eog(t, 7)); /* "<|end|>" */
        n = tp_tokenizer_encode(t, "a<x>b", true, false, ids, 16);
        const int w3[] = { 7, 0, 8, 1 };
        CHECK(ids_equal(ids, n, w3, 4));
        char *d = tp_tokenizer_decode(t, ids, n);
        CHECK(strcmp(d, "a<x>b") == 0);
        free(d);
        tp_tokenizer_free(t);
    }
    /* ignore_merges: a pre-token that is a token is taken whole */
    tokenizer *t = tiny_tok(dir, forms[1], true, false, err);
    REQUIRE(t);
    int n = tp_tokenizer_encode(t, "ac", false, false, ids, 16);
    CHECK(n == 1 && ids[0] == 6);
    tp_tokenizer_free(t);

    /* errors name the file and the key */
    t = tiny_tok(dir, "[[\"a\"]]", false, false, err);
    CHECK(!t);
    CHECK_MSG(strstr(err, "tokenizer.json: model.merges[0]") != NULL, "err: %s", err);
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    REQUIRE(write_file(path, "{\"model\":{\"type\":\"BPE\",\"merges\":[]}}"));
    t = tp_tokenizer_from_hf(dir, err);
    CHECK(!t);
    CHECK_MSG(strstr(err, "tokenizer.json: missing model.vocab") != NULL, "err: %s", err);
    REQUIRE(write_file(path, "{\"model\": [1, 2"));
    t = tp_tokenizer_from_hf(dir, err);
    CHECK(!t);
    CHECK_MSG(strstr(err, "tokenizer.json: not valid JSON at byte 15: expected ',' or ']'") != NULL, "err: %s", err);
    snprintf(path, sizeof path, "rm -rf '%s'", dir);
    CHECK(system(path) == 0);
    t = tp_tokenizer_from_hf(dir, err);
    CHECK(!t);
    CHECK_MSG(strstr(err, "tokenizer.json: cannot open") != NULL, "err: %s", err);
    free(dir);
}
