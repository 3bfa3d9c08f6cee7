/* test_chat.c: chat formats (src/chat) against llama.cpp's 30 real templates and
 * their expected renderings, detection, forced names, the readers of the model's
 * template (GGUF, tokenizer_config.json, chat_template.jinja), limits, and the
 * --enable-thinking prompt. */
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat/chat.h"
#include "core/common.h"
#include "format/gguf.h"
#include "tools/gguf_write.h"
#include "tokenizer/tokenizer.h"

#define CASES_JSON SHARED_DIR "/chat-templates/llamacpp-chat-template-cases.json"
#define SPM_VOCAB SHARED_DIR "/tokenizer-tests/llama.cpp/ggml-vocab-llama-spm.gguf"
#define BPE_VOCAB SHARED_DIR "/tokenizer-tests/generated/ggml-vocab-llama3-from-tokenizer-json.gguf"
#define LLAMA3_HF SHARED_DIR "/tokenizer-tests/llama3-hf"
#define STORIES SHARED_DIR "/models/stories260K.gguf"

/* ------------------------------------------------------------- helpers -- */

static cJSON *load_cases(void) {
    char err[TP_ERR_LEN];
    size_t n;
    char *txt = tp_read_file(CASES_JSON, &n, err);
    if (!txt) { fprintf(stderr, "  %s\n", err); return NULL; }
    cJSON *j = cJSON_ParseWithLength(txt, n);
    free(txt);
    return j;
}

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The cases' conversation as messages (pointers into the JSON). */
static size_t conversation(const cJSON *root, tp_chat_msg *m, size_t cap) {
    size_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "conversation")) {
        if (n == cap) break;
        m[n].role = jstr(e, "role");
        m[n].content = jstr(e, "content");
        n++;
    }
    return n;
}

static const cJSON *find_case(const cJSON *root, const char *name_prefix) {
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
        const char *nm = jstr(c, "name");
        if (nm && strncmp(nm, name_prefix, strlen(name_prefix)) == 0) return c;
    }
    return NULL;
}

static tokenizer *load_gguf_tok(const char *path, char *err) {
    gguf_file *f = tp_gguf_open(path, err);
    if (!f) return NULL;
    tokenizer *t = tp_tokenizer_from_gguf(f, err);
    tp_gguf_close(f);
    return t;
}

static bool write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(text, 1, strlen(text), f) == strlen(text);
    return fclose(f) == 0 && ok;
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void rm_rf(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

/* ----------------------------------------- llama.cpp's 30 real templates -- */

/* The format each case's template must be recognised as (by the start of the
 * case's name). Every case of the file is listed: a case that is missing here
 * fails the test, so a new case in the data is noticed. */
static const struct {
    const char *case_name, *format;
} k_expected_format[] = {
    { "teknium/OpenHermes-2.5-Mistral-7B", "chatml" },
    { "mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1", "llama2" },
    { "TheBloke/FusionNet_34Bx2_MoE-AWQ", "llama2-sys-bos" },
    { "bofenghuang/vigogne-2-70b-chat", "llama2-sys-strip" },
    { "mlabonne/AlphaMonarch-7B", "monarch" },
    { "google/gemma-7b-it", "gemma" },
    { "OrionStarAI/Orion-14B-Chat", "orion" },
    { "openchat/openchat-3.5-0106", "openchat" },
    { "deepseek-ai/deepseek-coder-33b-instruct", "deepseek" },
    { "eachadea/vicuna-13b-1.1", "vicuna" },
    { "Orca-Vicuna", "vicuna-orca" },
    { "CohereForAI/c4ai-command-r-plus", "command-r" },
    { "Llama-3", "llama3" },
    { "Phi-3-mini", "phi3" },
    { "Phi-3-small", "phi3" },
    { "Phi-3-medium", "phi3" },
    { "Phi-3-vision", "phi3" },
    { "ChatGLM3", "chatglm3" },
    { "ChatGLM4", "chatglm4" },
    { "GLMEdge", "glmedge" },
    { "MiniCPM-3B-OpenHermes-2.5-v2-GGUF", "minicpm" },
    { "DeepSeek-V2", "deepseek2" },
    { "ibm-granite/granite-3.0-8b-instruct", "granite" },
    { "mistralai/Mistral-7B-Instruct-v0.2 (mistralai 'v1'", "mistral-v1" },
    { "Mistral-Large-Instruct-2407", "mistral-v3" },
    { "Mistral-Nemo-Instruct-2407", "mistral-v3-tekken" },
    { "mistralai/Mistral-Large-Instruct-2411", "mistral-v7" },
    { "ai-sage/GigaChat-20B-A3B-instruct", "gigachat" },
    { "Infinigence/Megrez-3B-Instruct", "megrez" },
    { "phi-4", "phi4" },
};
#define N_EXPECTED (sizeof k_expected_format / sizeof k_expected_format[0])

static const char *expected_format(const char *case_name) {
    for (size_t i = 0; i < N_EXPECTED; i++) {
        const char *p = k_expected_format[i].case_name;
        if (strncmp(case_name, p, strlen(p)) == 0) return k_expected_format[i].format;
    }
    return NULL;
}

TEST(chat_llamacpp_cases_render_exactly) {
    cJSON *root = load_cases();
    REQUIRE(root);
    tp_chat_msg conv[16];
    size_t n = conversation(root, conv, 16);
    REQUIRE(n == 6);
    int rendered = 0, refused = 0, total = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "cases")) {
        const char *name = jstr(c, "name"), *tmpl = jstr(c, "template"), *want = jstr(c, "expected_output");
        const char *bos = jstr(c, "bos_token"), *eos = jstr(c, "eos_token");
        REQUIRE(name && tmpl && want && bos && eos);
        total++;
        char err[TP_ERR_LEN] = "";
        const tp_chat_format *f = tp_chat_format_detect(tmpl, err);
        const char *fmt = expected_format(name);
        if (!f) {
            /* refused: the message quotes the template's start */
            refused++;
            CHECK_MSG(strncmp(err, "chat template \"", 15) == 0, "%s: refused without quoting it: %s", name, err);
            CHECK_MSG(fmt == NULL, "%s: expected %s, refused: %s", name, fmt, err);
            continue;
        }
        CHECK_MSG(fmt && strcmp(tp_chat_format_name(f), fmt) == 0, "%s: recognised as %s, expected %s", name,
                  tp_chat_format_name(f), fmt ? fmt : "(case not listed)");
        char *got = tp_chat_render(f, conv, n, bos, eos, true, err);
        CHECK_MSG(got && strcmp(got, want) == 0, "%s (%s):\n    got  '%s'\n    want '%s'", name,
                  tp_chat_format_name(f), got ? got : err, want);
        if (got && strcmp(got, want) == 0) rendered++;
        free(got);
    }
    /* every case of the file is one of the supported formats and renders exactly */
    CHECK_INT_EQ(total, 30);
    CHECK_INT_EQ(rendered, 30);
    CHECK_INT_EQ(refused, 0);
    CHECK_INT_EQ(N_EXPECTED, 30);
    cJSON_Delete(root);
}

/* The renderings do not depend on the case's bos/eos when the format's defaults
 * are the same tokens: monarch and the Mistral formats with no strings given. */
TEST(chat_bos_eos_strings) {
    cJSON *root = load_cases();
    REQUIRE(root);
    tp_chat_msg conv[16];
    size_t n = conversation(root, conv, 16);
    char err[TP_ERR_LEN];
    const char *names[] = { "mlabonne/AlphaMonarch-7B", "Mistral-Large-Instruct-2407", "DeepSeek-V2" };
    for (size_t k = 0; k < 3; k++) {
        const cJSON *c = find_case(root, names[k]);
        REQUIRE(c);
        const tp_chat_format *f = tp_chat_format_detect(jstr(c, "template"), err);
        REQUIRE(f);
        char *got = tp_chat_render(f, conv, n, NULL, "", true, err);
        CHECK_MSG(got && strcmp(got, jstr(c, "expected_output")) == 0, "%s: %s", names[k], got ? got : err);
        free(got);
    }
    /* other strings are written where the format has BOS/EOS: every turn of monarch */
    const tp_chat_format *f = tp_chat_format_by_name("monarch", err);
    REQUIRE(f);
    char *got = tp_chat_render(f, conv, 3, "[B]", "[E]", true, err);
    CHECK_MSG(got && strcmp(got, "system\nYou are a helpful assistant[E]\n[B]user\nHello[E]\n"
                                 "[B]assistant\nHi there[E]\n[B]assistant\n") == 0, "%s", got ? got : err);
    free(got);
    /* ...but never a BOS at the start of the text: the tokenizer adds that one */
    f = tp_chat_format_by_name("llama2-sys-bos", err);
    got = tp_chat_render(f, conv + 1, 2, "[B]", "[E]", true, err);
    CHECK_MSG(got && strcmp(got, "[INST] Hello [/INST]Hi there[E]") == 0, "%s", got ? got : err);
    free(got);
    /* gigachat is the exception: its text starts with BOS */
    f = tp_chat_format_by_name("gigachat", err);
    got = tp_chat_render(f, conv + 1, 1, "[B]", "[E]", false, err);
    CHECK_MSG(got && strcmp(got, "[B]user<|role_sep|>Hello<|message_sep|>available functions<|role_sep|>[]"
                                 "<|message_sep|>") == 0, "%s", got ? got : err);
    free(got);
    cJSON_Delete(root);
}

/* ------------------------------- formats not in the file: derived checks -- */

TEST(chat_variants_outside_the_cases) {
    cJSON *root = load_cases();
    REQUIRE(root);
    tp_chat_msg conv[16];
    size_t n = conversation(root, conv, 16);
    char err[TP_ERR_LEN];

    /* llama2-sys is llama2-sys-bos without the BOS between turns */
    const cJSON *c = find_case(root, "TheBloke/FusionNet");
    REQUIRE(c);
    const char *bos_form = jstr(c, "expected_output");
    char *want = malloc(strlen(bos_form) + 1), *w = want;
    for (const char *p = bos_form; *p;)
        if (strncmp(p, "<s>", 3) == 0) p += 3;
        else *w++ = *p++;
    *w = 0;
    const tp_chat_format *f = tp_chat_format_by_name("llama2-sys", err);
    REQUIRE(f);
    char *got = tp_chat_render(f, conv, n, "<s>", "</s>", true, err);
    CHECK_MSG(got && strcmp(got, want) == 0, "got '%s' want '%s'", got ? got : err, want);
    free(got);
    free(want);
    /* and is what a Llama 2 style template with <<SYS>> but no strip/BOS markers is */
    f = tp_chat_format_detect("{% for m in messages %}{% if m['role'] == 'system' %}{{ '<<SYS>>\\n' + m['content'] }}"
                              "{% else %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endif %}{% endfor %}", err);
    CHECK(f && strcmp(tp_chat_format_name(f), "llama2-sys") == 0);

    /* mistral-v7-tekken: v7 without the spaces after the tags */
    f = tp_chat_format_by_name("mistral-v7-tekken", err);
    REQUIRE(f);
    got = tp_chat_render(f, conv, n, "", "</s>", true, err);
    CHECK_MSG(got && strcmp(got, "[SYSTEM_PROMPT]You are a helpful assistant[/SYSTEM_PROMPT][INST]Hello[/INST]"
                                 "Hi there</s>[INST]Who are you[/INST]   I am an assistant   </s>"
                                 "[INST]Another question[/INST]") == 0, "%s", got ? got : err);
    free(got);
    f = tp_chat_format_detect("{{ bos_token }}{{ '[SYSTEM_PROMPT]' + system_message + '[/SYSTEM_PROMPT]' }}"
                              "{{ '[INST]' + message['content'] + '[/INST]' }}", err);
    CHECK(f && strcmp(tp_chat_format_name(f), "mistral-v7-tekken") == 0);

    /* plain: tempo's own fallback */
    f = tp_chat_format_by_name("plain", err);
    REQUIRE(f);
    got = tp_chat_render(f, conv, 3, NULL, NULL, true, err);
    CHECK_MSG(got && strcmp(got, "System: You are a helpful assistant\n\nUser: Hello\n\nAssistant: Hi there\n\n"
                                 "Assistant:") == 0, "%s", got ? got : err);
    free(got);
    cJSON_Delete(root);
}

TEST(chat_generation_prompt_flag) {
    char err[TP_ERR_LEN];
    const tp_chat_msg m[2] = { { "system", "S" }, { "user", "  U  " } };
    const struct {
        const char *name, *with, *without;
    } k[] = {
        { "chatml", "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n  U  <|im_end|>\n<|im_start|>assistant\n",
          "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n  U  <|im_end|>\n" },
        { "llama3", "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>"
                    "\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
          "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>"
          "\n\nU<|eot_id|>" },
        /* the user turn already ends where the answer starts: nothing to add */
        { "mistral-v1", " [INST] S\n\n  U   [/INST]", " [INST] S\n\n  U   [/INST]" },
        { "gemma", "<start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\n",
          "<start_of_turn>user\nS\n\nU<end_of_turn>\n" },
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        const tp_chat_format *f = tp_chat_format_by_name(k[i].name, err);
        REQUIRE(f);
        for (int g = 0; g < 2; g++) {
            char *got = tp_chat_render(f, m, 2, NULL, NULL, g == 0, err);
            const char *want = g == 0 ? k[i].with : k[i].without;
            CHECK_MSG(got && strcmp(got, want) == 0, "%s gen=%d: '%s'", k[i].name, g == 0, got ? got : err);
            free(got);
        }
    }
}

/* ------------------------------------------------------------ detection -- */

TEST(chat_detect_real_and_unknown_templates) {
    char err[TP_ERR_LEN];
    /* Meta's Llama 3 template, as tokenizer_config.json holds it */
    size_t len;
    char *cfg_txt = tp_read_file(LLAMA3_HF "/tokenizer_config.json", &len, err);
    REQUIRE(cfg_txt);
    cJSON *cfg = cJSON_ParseWithLength(cfg_txt, len);
    free(cfg_txt);
    REQUIRE(cfg);
    const char *meta = jstr(cfg, "chat_template");
    REQUIRE(meta);
    const tp_chat_format *f = tp_chat_format_detect(meta, err);
    CHECK(f && strcmp(tp_chat_format_name(f), "llama3") == 0);
    cJSON_Delete(cfg);

    /* a format name in place of a template selects it (llama.cpp does the same) */
    f = tp_chat_format_detect("chatml", err);
    CHECK(f && strcmp(tp_chat_format_name(f), "chatml") == 0);

    /* not recognised: the message quotes the template's start (escaped, cut) and
     * lists every name, the last one included (nothing truncated) */
    const char *alpaca = "{{ bos_token }}{% for message in messages %}\n{{ '### Input:\\n' + message['content'] }}"
                         "{% endfor %}";
    f = tp_chat_format_detect(alpaca, err);
    CHECK(f == NULL);
    CHECK_MSG(strstr(err, "\"{{ bos_token }}{% for message in...\"") && strstr(err, "not one tempo recognises") &&
              strstr(err, "--chat-template") && strstr(err, "llama3, llama2,") && strstr(err, ", plain"),
              "err: %s", err);
    CHECK(strlen(err) < TP_ERR_LEN - 1);
    /* line breaks in the excerpt are escaped: the message stays one line */
    f = tp_chat_format_detect("{%- for m in messages %}\n{{ m.role }}:\t{{ m.content }}\n{% endfor %}", err);
    CHECK(f == NULL);
    CHECK_MSG(!strchr(err, '\n') && strstr(err, "\"{%- for m in messages %}\\n{{ m.ro...\""), "err: %s", err);
    /* a UTF-8 character is never cut in the excerpt */
    f = tp_chat_format_detect("{{ '\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81"
                              "\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81' }}", err);
    CHECK(f == NULL);
    CHECK_MSG(strstr(err, "\"{{ '\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81"
                          "\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81...\""), "err: %s", err);

    /* the longest message (an excerpt of escapes, the longest family name) still
     * ends with the whole list */
    f = tp_chat_format_detect("  x\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t"
                              "<｜Assistant｜>", err);
    CHECK(f == NULL);
    CHECK_MSG(strstr(err, "\"x\\t\\t") && strstr(err, "DeepSeek V3 / R1") && strstr(err, ", gigachat, plain"),
              "err: %s", err);

    /* formats known but not rendered are named */
    f = tp_chat_format_detect("{{ '<|header_start|>' + message['role'] + '<|header_end|>\\n\\n' }}", err);
    CHECK(f == NULL);
    CHECK_MSG(strstr(err, "Llama 4's format, which tempo does not render"), "err: %s", err);
    /* SmolVLM uses <|im_start|> but is not ChatML */
    f = tp_chat_format_detect("<|im_start|>{% for m in messages %}{{ m['content'] }}<end_of_utterance>{% endfor %}",
                              err);
    CHECK(f == NULL && strstr(err, "SmolVLM"));
    /* Zephyr-style tags with an EOS after each message are not GLM-Edge */
    f = tp_chat_format_detect("{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + "
                              "message['content'] + eos_token }}{% endif %}{% endfor %}{{ '<|assistant|>' }}", err);
    CHECK(f == NULL && strstr(err, "not one tempo recognises"));
    f = tp_chat_format_detect(NULL, err);
    CHECK(f == NULL);
}

/* ---------------------------------------------------------- forced names -- */

TEST(chat_names_and_forced_formats) {
    char err[TP_ERR_LEN], names[TP_ERR_LEN];
    int n = tp_chat_format_count();
    CHECK(n >= 30);
    size_t len = tp_chat_format_names(names, sizeof names);
    CHECK_INT_EQ(len, strlen(names));
    for (int i = 0; i < n; i++) {
        const tp_chat_format *f = tp_chat_format_at(i);
        REQUIRE(f);
        const char *nm = tp_chat_format_name(f);
        CHECK(tp_chat_format_by_name(nm, err) == f);
        CHECK(strstr(names, nm) != NULL);
        CHECK(tp_chat_format_used_by(f) && *tp_chat_format_used_by(f));
        for (int k = 0; k < i; k++) CHECK(strcmp(tp_chat_format_name(tp_chat_format_at(k)), nm) != 0);
    }
    CHECK(tp_chat_format_at(n) == NULL && tp_chat_format_at(-1) == NULL);
    /* a short buffer is cut and terminated; the return is the full length */
    char small[8];
    CHECK_INT_EQ(tp_chat_format_names(small, sizeof small), len);
    CHECK(strlen(small) == 7 && strncmp(small, names, 7) == 0);

    /* an unknown name: named, with the list */
    CHECK(tp_chat_format_by_name("llama-3", err) == NULL);
    CHECK_MSG(strstr(err, "unknown chat template 'llama-3'") && strstr(err, "chatml") && strstr(err, "plain"),
              "err: %s", err);
    CHECK(tp_chat_format_by_name(NULL, err) == NULL);
    /* what the user typed is quoted on one line, cut */
    CHECK(tp_chat_format_by_name("chat\nml 0123456789012345678901234567890123456789", err) == NULL);
    CHECK_MSG(strstr(err, "'chat\\nml 012345678901234567890123...'"), "err: %s", err);

    /* forced beats the model's template; a Jinja text forced is recognised */
    tokenizer *t = load_gguf_tok(BPE_VOCAB, err);
    REQUIRE(t);
    REQUIRE(tp_tokenizer_chat_template(t));
    const tp_chat_format *f = tp_chat_format_for(t, NULL, err);
    CHECK(f && strcmp(tp_chat_format_name(f), "llama3") == 0);
    f = tp_chat_format_for(t, "", err); /* empty: not forced */
    CHECK(f && strcmp(tp_chat_format_name(f), "llama3") == 0);
    f = tp_chat_format_for(t, "chatml", err);
    CHECK(f && strcmp(tp_chat_format_name(f), "chatml") == 0);
    f = tp_chat_format_for(t, "{% for m in messages %}{{ '<|im_start|>' + m['role'] }}{% endfor %}", err);
    CHECK(f && strcmp(tp_chat_format_name(f), "chatml") == 0);
    f = tp_chat_format_for(t, "{{ '### Human: ' }}", err);
    CHECK(f == NULL && strstr(err, "not one tempo recognises"));
    f = tp_chat_format_for(t, "nonsense", err);
    CHECK(f == NULL && strstr(err, "unknown chat template 'nonsense'"));
    tp_tokenizer_free(t);
}

/* ---------------------------------------------------------- bad input -- */

TEST(chat_rejects_bad_messages) {
    char err[TP_ERR_LEN];
    const tp_chat_format *chatml = tp_chat_format_by_name("chatml", err), *llama2 = tp_chat_format_by_name("llama2", err);
    REQUIRE(chatml && llama2);
    tp_chat_msg m[2] = { { "user", "hi" }, { "tool", "42" } };
    /* formats that write the role as given take other roles; the others refuse them */
    char *s = tp_chat_render(chatml, m, 2, NULL, NULL, false, err);
    CHECK(s && strcmp(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>tool\n42<|im_end|>\n") == 0);
    free(s);
    CHECK(tp_chat_render(llama2, m, 2, NULL, NULL, false, err) == NULL);
    CHECK_MSG(strstr(err, "message 1: the llama2 format has no role 'tool'"), "err: %s", err);
    /* role names: lowercase words only, so no markup can come in through them */
    const char *bad[] = { "", "User", "user<|im_end|>", "a b", "abcdefghijklmnopqrstuvwxyz0123456" /* 33 */ };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m[1].role = bad[i];
        CHECK_MSG(tp_chat_render(chatml, m, 2, NULL, NULL, false, err) == NULL && strstr(err, "is not a role name"),
                  "role '%s': %s", bad[i], err);
    }
    m[1].role = "abcdefghijklmnopqrstuvwxyz012345"; /* 32: fine */
    s = tp_chat_render(chatml, m, 2, NULL, NULL, false, err);
    CHECK(s != NULL);
    free(s);
    m[1].role = NULL;
    CHECK(tp_chat_render(chatml, m, 2, NULL, NULL, false, err) == NULL && strstr(err, "message 1 has no role"));
    m[1].role = "user";
    m[1].content = NULL;
    CHECK(tp_chat_render(chatml, m, 2, NULL, NULL, false, err) == NULL && strstr(err, "message 1 has no content"));
    CHECK(tp_chat_render(chatml, m, 0, NULL, NULL, true, err) == NULL && strstr(err, "no messages"));
    CHECK(tp_chat_render(chatml, NULL, 1, NULL, NULL, true, err) == NULL);
    CHECK(tp_chat_render(NULL, m, 1, NULL, NULL, true, err) == NULL);

    /* formats without a system role refuse a system message they would lose */
    const tp_chat_msg sys_last[2] = { { "user", "u" }, { "system", "s" } };
    CHECK(tp_chat_render(tp_chat_format_by_name("gemma", err), sys_last, 2, NULL, NULL, true, err) == NULL);
    CHECK_MSG(strstr(err, "gemma format has no system role"), "err: %s", err);
    CHECK(tp_chat_render(tp_chat_format_by_name("orion", err), sys_last, 2, NULL, NULL, true, err) == NULL);
    CHECK(tp_chat_render(tp_chat_format_by_name("gigachat", err), sys_last, 2, NULL, NULL, true, err) == NULL);
    CHECK_MSG(strstr(err, "message 1: the gigachat format takes a system message only first"), "err: %s", err);

    /* an empty rendering is an empty string, not an error */
    const tp_chat_msg empty[1] = { { "assistant", "  " } };
    s = tp_chat_render(tp_chat_format_by_name("minicpm", err), empty, 1, NULL, NULL, true, err);
    CHECK(s && s[0] == 0);
    free(s);
}

TEST(chat_size_limits) {
    char err[TP_ERR_LEN];
    const tp_chat_format *f = tp_chat_format_by_name("chatml", err);
    REQUIRE(f);
    size_t n = TP_CHAT_MAX_MESSAGES + 1;
    tp_chat_msg *m = malloc(n * sizeof *m);
    REQUIRE(m);
    for (size_t i = 0; i < n; i++) m[i] = (tp_chat_msg){ i % 2 ? "assistant" : "user", "x" };
    /* the most messages allowed render; one more is refused before any work */
    char *s = tp_chat_render(f, m, n - 1, NULL, NULL, true, err);
    CHECK(s && strlen(s) == (n - 1) / 2 * (strlen("<|im_start|>user\nx<|im_end|>\n") +
                                             strlen("<|im_start|>assistant\nx<|im_end|>\n")) +
                                 strlen("<|im_start|>assistant\n"));
    free(s);
    CHECK(tp_chat_render(f, m, n, NULL, NULL, true, err) == NULL);
    CHECK_MSG(strstr(err, "10001 messages, more than the limit of 10000"), "err: %s", err);
    CHECK(tp_chat_render(f, m, (size_t)-1, NULL, NULL, true, err) == NULL);

    /* the total text: exactly the limit renders, one byte more (over two messages) does not */
    size_t half = TP_CHAT_MAX_CONTENT_BYTES / 2;
    char *a = malloc(half + 2), *b = malloc(half + 1);
    REQUIRE(a && b);
    memset(a, 'a', half + 1);
    a[half + 1] = 0;
    memset(b, 'b', half);
    b[half] = 0;
    m[0].content = a + 1; /* half bytes */
    m[1].content = b;
    s = tp_chat_render(f, m, 2, NULL, NULL, false, err);
    CHECK(s && strlen(s) == 2 * half + strlen("<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"));
    free(s);
    m[0].content = a; /* half + 1 */
    CHECK(tp_chat_render(f, m, 2, NULL, NULL, false, err) == NULL);
    CHECK_MSG(strstr(err, "more than 16777216 bytes of text (at message 1)"), "err: %s", err);
    free(a);
    free(b);

    /* token strings are bounded too */
    char tok[TP_CHAT_MAX_TOKEN_BYTES + 2];
    memset(tok, 't', sizeof tok - 1);
    tok[sizeof tok - 1] = 0;
    m[0] = (tp_chat_msg){ "user", "x" };
    CHECK(tp_chat_render(f, m, 1, tok, NULL, true, err) == NULL && strstr(err, "longer than 256 bytes"));
    tok[TP_CHAT_MAX_TOKEN_BYTES] = 0;
    s = tp_chat_render(f, m, 1, tok, tok, true, err);
    CHECK(s != NULL);
    free(s);
    free(m);
}

/* --------------------------------------------- the model's template: GGUF -- */

/* The Llama 2 vocabulary with a chat template added, as a converter writes it. */
static bool write_vocab_with_template(const char *path, const char *tmpl, bool as_number) {
    char err[TP_ERR_LEN];
    gguf_file *src = tp_gguf_open(SPM_VOCAB, err);
    if (!src) return false;
    gguf_writer *w = tp_gguf_writer_new(0);
    tp_gguf_w_copy_kv(w, src, NULL);
    if (as_number) tp_gguf_w_u32(w, "tokenizer.chat_template", 7);
    else if (tmpl) tp_gguf_w_str(w, "tokenizer.chat_template", tmpl);
    bool ok = tp_gguf_writer_save(w, path, err) == 0;
    if (!ok) fprintf(stderr, "  %s\n", err);
    tp_gguf_writer_free(w);
    tp_gguf_close(src);
    return ok;
}

TEST(chat_gguf_template) {
    char err[TP_ERR_LEN];
    cJSON *root = load_cases();
    REQUIRE(root);
    const cJSON *c = find_case(root, "mistralai/Mistral-7B-Instruct-v0.2 (mistralai 'v1'");
    REQUIRE(c);
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char *path = join(dir, "vocab.gguf");

    /* Mistral's v1 template on the Llama 2 vocabulary: the tokenizer keeps the text,
     * and its own EOS string ("</s>") gives the case's expected rendering */
    REQUIRE(write_vocab_with_template(path, jstr(c, "template"), false));
    tokenizer *t = load_gguf_tok(path, err);
    REQUIRE(t);
    CHECK(tp_tokenizer_chat_template(t) && strcmp(tp_tokenizer_chat_template(t), jstr(c, "template")) == 0);
    tp_chat_msg conv[16];
    size_t n = conversation(root, conv, 16);
    char *s = tp_chat_apply(t, NULL, conv, n, true, err);
    CHECK_MSG(s && strcmp(s, jstr(c, "expected_output")) == 0, "%s", s ? s : err);
    free(s);
    s = tp_chat_thinking_prompt(t, NULL, "Hi", err);
    CHECK_MSG(s && strcmp(s, " [INST] Enable deep thinking subroutine.\n\nHi [/INST]") == 0, "%s", s ? s : err);
    /* the text tokenizes with the vocabulary's [INST] pieces and one BOS, as llama.cpp would feed it */
    int32_t ids[64];
    int k = s ? tp_tokenizer_encode(t, s, true, true, ids, 64) : -1;
    CHECK(k > 5 && ids[0] == 1 && ids[1] != 1);
    free(s);
    tp_tokenizer_free(t);

    /* a template the module does not know: loading works, using it is refused */
    REQUIRE(write_vocab_with_template(path, "{{ '### Human: ' + messages[0]['content'] }}", false));
    t = load_gguf_tok(path, err);
    REQUIRE(t);
    CHECK(tp_chat_apply(t, NULL, conv, n, true, err) == NULL);
    CHECK_MSG(strstr(err, "\"{{ '### Human: ' + messages[0]['...\" is not one tempo recognises"), "err: %s", err);
    s = tp_chat_apply(t, "vicuna", conv, 2, true, err); /* forcing one works */
    CHECK(s && strcmp(s, "You are a helpful assistant\n\nUSER: Hello\nASSISTANT:") == 0);
    free(s);
    tp_tokenizer_free(t);

    /* no template: none; a template that is not a string: the file is refused */
    REQUIRE(write_vocab_with_template(path, NULL, false));
    t = load_gguf_tok(path, err);
    REQUIRE(t);
    CHECK(tp_tokenizer_chat_template(t) == NULL);
    CHECK(tp_chat_format_for(t, NULL, err) == tp_chat_format_by_name("plain", err));
    tp_tokenizer_free(t);
    REQUIRE(write_vocab_with_template(path, NULL, true));
    t = load_gguf_tok(path, err);
    CHECK(t == NULL);
    CHECK_MSG(strstr(err, "tokenizer.chat_template is not a string"), "err: %s", err);
    tp_tokenizer_free(t);

    unlink(path);
    free(path);
    rm_rf(dir);
    free(dir);
    cJSON_Delete(root);
}

/* ---------------------------- the model's template: Hugging Face folders -- */

/* A folder with the real Llama 3 tokenizer.json (linked) and the given
 * tokenizer_config.json (NULL: none) and chat_template.jinja (NULL: none). */
static tokenizer *hf_tok(const char *dir, const char *config, const char *jinja, char *err) {
    char *tj = join(dir, "tokenizer.json"), *cj = join(dir, "tokenizer_config.json"),
         *jj = join(dir, "chat_template.jinja");
    unlink(tj);
    unlink(cj);
    unlink(jj);
    char *real = realpath(LLAMA3_HF "/tokenizer.json", NULL);
    bool ok = real && symlink(real, tj) == 0 && (!config || write_text(cj, config)) && (!jinja || write_text(jj, jinja));
    free(real);
    free(tj);
    free(cj);
    free(jj);
    if (!ok) return tp_fail(err, "cannot write the test folder %s", dir), NULL;
    return tp_tokenizer_from_hf(dir, err);
}

TEST(chat_hf_template) {
    char err[TP_ERR_LEN];
    /* the real tokenizer_config.json: Meta's Llama 3 template */
    tokenizer *t = tp_tokenizer_from_hf(LLAMA3_HF, err);
    REQUIRE(t);
    const char *tmpl = tp_tokenizer_chat_template(t);
    CHECK(tmpl && strncmp(tmpl, "{% set loop_messages = messages %}", 34) == 0 && strstr(tmpl, "<|eot_id|>"));
    const tp_chat_format *f = tp_chat_format_for(t, NULL, err);
    CHECK(f && strcmp(tp_chat_format_name(f), "llama3") == 0);
    tp_tokenizer_free(t);

    char *dir = test_tmpdir();
    REQUIRE(dir);
    const char *chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                         "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
    /* the list form: the "default" entry is the chat template */
    t = hf_tok(dir,
               "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"{{ '<|im_start|>' }}\"},"
               " {\"name\": \"default\", \"template\": \"{{ '<|start_header_id|>' + '<|end_header_id|>' }}\"}]}",
               NULL, err);
    REQUIRE(t);
    CHECK(tp_tokenizer_chat_template(t) &&
          strcmp(tp_tokenizer_chat_template(t), "{{ '<|start_header_id|>' + '<|end_header_id|>' }}") == 0);
    tp_tokenizer_free(t);
    /* a list without "default": no chat template */
    t = hf_tok(dir, "{\"chat_template\": [{\"name\": \"rag\", \"template\": \"x\"}]}", NULL, err);
    REQUIRE(t);
    CHECK(tp_tokenizer_chat_template(t) == NULL);
    tp_tokenizer_free(t);
    /* chat_template.jinja is preferred to the config's (as transformers does) */
    t = hf_tok(dir, "{\"chat_template\": \"{{ '<|start_header_id|><|end_header_id|>' }}\"}", chatml, err);
    REQUIRE(t);
    CHECK(tp_tokenizer_chat_template(t) && strcmp(tp_tokenizer_chat_template(t), chatml) == 0);
    f = tp_chat_format_for(t, NULL, err);
    CHECK(f && strcmp(tp_chat_format_name(f), "chatml") == 0);
    tp_tokenizer_free(t);
    /* ...and used with no tokenizer_config.json at all */
    t = hf_tok(dir, NULL, chatml, err);
    REQUIRE(t);
    CHECK(tp_tokenizer_chat_template(t) && strcmp(tp_tokenizer_chat_template(t), chatml) == 0);
    tp_tokenizer_free(t);
    /* no template anywhere: the Llama 3 vocabulary's default is llama3 */
    t = hf_tok(dir, "{\"chat_template\": null}", NULL, err);
    REQUIRE(t);
    CHECK(tp_tokenizer_chat_template(t) == NULL);
    f = tp_chat_format_for(t, NULL, err);
    CHECK(f && strcmp(tp_chat_format_name(f), "llama3") == 0);
    tp_tokenizer_free(t);
    /* malformed: the file and the key are named */
    t = hf_tok(dir, "{\"chat_template\": 5}", NULL, err);
    CHECK(t == NULL);
    CHECK_MSG(strstr(err, "tokenizer_config.json: chat_template is neither a string nor a list"), "err: %s", err);
    t = hf_tok(dir, "{\"chat_template\": [{\"name\": \"default\"}]}", NULL, err);
    CHECK(t == NULL);
    CHECK_MSG(strstr(err, "tokenizer_config.json: a chat_template entry has no name or template"), "err: %s", err);
    rm_rf(dir);
    free(dir);
}

/* ------------------------------------------------- --enable-thinking -- */

TEST(chat_thinking_prompt) {
    char err[TP_ERR_LEN];
    /* the Llama 3 vocabulary (its GGUF has Meta's template): the Llama 3 headers,
     * the same text tempo wrote before this module */
    tokenizer *t = load_gguf_tok(BPE_VOCAB, err);
    REQUIRE(t);
    const char *llama3 = "<|start_header_id|>system<|end_header_id|>\n\nEnable deep thinking subroutine.<|eot_id|>"
                         "<|start_header_id|>user<|end_header_id|>\n\nWhy is the sky blue?<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n";
    char *s = tp_chat_thinking_prompt(t, NULL, "Why is the sky blue?", err);
    CHECK_MSG(s && strcmp(s, llama3) == 0, "%s", s ? s : err);
    free(s);
    CHECK(tp_chat_format_default(t) == tp_chat_format_by_name("llama3", err));
    s = tp_chat_thinking_prompt(t, "chatml", "Hi", err);
    CHECK(s && strcmp(s, "<|im_start|>system\nEnable deep thinking subroutine.<|im_end|>\n"
                         "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n") == 0);
    free(s);
    CHECK(tp_chat_thinking_prompt(t, "chatml3", "Hi", err) == NULL && strstr(err, "'chatml3'"));
    tp_tokenizer_free(t);

    /* stories260K: no template, no Llama 3 tokens: the plain form */
    t = load_gguf_tok(STORIES, err);
    REQUIRE(t);
    CHECK(tp_tokenizer_chat_template(t) == NULL);
    s = tp_chat_thinking_prompt(t, NULL, "Hi", err);
    CHECK(s && strcmp(s, "System: Enable deep thinking subroutine.\n\nUser: Hi\n\nAssistant:") == 0);
    free(s);
    tp_tokenizer_free(t);
    /* no tokenizer, no prompt */
    s = tp_chat_thinking_prompt(NULL, NULL, NULL, err);
    CHECK(s && strcmp(s, "System: Enable deep thinking subroutine.\n\nUser: \n\nAssistant:") == 0);
    free(s);
}
