/* chat.c: chat formats -- recognise a model's Jinja chat template, render a
 * conversation in that format (contract in chat.h).
 *
 * Why no Jinja. Real templates use loops, filters, namespaces, raise_exception and
 * Python string methods; a renderer for all of that is a project of its own, and
 * most models use one of a few dozen formats. So, as llama.cpp's built-in chat
 * support does, we look for strings that only one format's templates contain and
 * then apply that format's fixed rules. The rules and the markers follow the
 * behaviour of llama.cpp's llm_chat_detect_template / llm_chat_apply_template, and
 * the tests hold every format to llama.cpp's expected renderings of 30 real
 * templates (../shared/chat-templates/). The code is our own.
 *
 * The file reads top to bottom:
 *   1. the output buffer (every append checked against a size limit)
 *   2. message helpers (trimming, role names)
 *   3. the renderers: two table-driven kinds cover most formats, a few formats
 *      with their own state (merged system prompts, turns) have a function each
 *   4. the format table: name, models, renderer and its strings
 *   5. lookup by name and the list of names
 *   6. detection from the template text
 *   7. tp_chat_render: input checks, then the renderer
 *   8. the model's format: forced name, its template, or a default
 */
#include "chat/chat.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "tokenizer/tokenizer.h"

/* ------------------------------------------------------- 1. output buffer -- */

/* The longest text a render may produce. With the input limits of chat.h the text
 * is at most 16 MiB of content plus, per message, a role (32), BOS and EOS (256
 * each) and a format's fixed strings (< 100): under 16 + 10000 * 1 KiB = 26 MiB.
 * So this never triggers for checked input; it keeps a logic error from growing
 * the buffer without bound. */
#define MAX_OUTPUT_BYTES ((size_t)32 << 20)

typedef struct {
    char *s;
    size_t len, cap;
    enum { OUT_OK, OUT_TOO_LONG, OUT_NO_MEMORY } state; /* sticky: later appends do nothing */
} out;

static void put_n(out *o, const char *p, size_t n) {
    if (o->state != OUT_OK || n == 0) return;
    if (n > MAX_OUTPUT_BYTES - o->len) { o->state = OUT_TOO_LONG; return; }
    size_t need = o->len + n + 1; /* <= MAX_OUTPUT_BYTES + 1: no overflow below */
    if (need > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < need) cap *= 2;
        char *s = realloc(o->s, cap);
        if (!s) { o->state = OUT_NO_MEMORY; return; }
        o->s = s;
        o->cap = cap;
    }
    memcpy(o->s + o->len, p, n);
    o->len += n;
    o->s[o->len] = 0;
}

static void put(out *o, const char *s) { put_n(o, s, strlen(s)); }

/* ------------------------------------------------------ 2. message helpers -- */

/* A piece of a message's text (content, possibly trimmed). */
typedef struct {
    const char *p;
    size_t n;
} span;

/* White space as C's isspace in the "C" locale (what llama.cpp's trim uses;
 * Jinja's trim would also strip Unicode spaces, which llama.cpp's renderings and
 * so our tests do not). */
static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

static span text_of(const char *s, bool trim) {
    span t = { s, strlen(s) };
    if (trim) {
        while (t.n && is_space(t.p[0])) { t.p++; t.n--; }
        while (t.n && is_space(t.p[t.n - 1])) t.n--;
    }
    return t;
}

static void put_span(out *o, span t) { put_n(o, t.p, t.n); }

/* The first bytes of a template (or of a name the user typed), quotable in a
 * one-line message: leading white space skipped, line breaks and tabs escaped,
 * other control bytes as '?', never cutting a UTF-8 character. 32 bytes say which
 * template it is and leave room in TP_ERR_LEN for the list of names (the longest
 * message is tested). */
static void excerpt(const char *s, char *buf, size_t cap) {
    enum { MAX_SRC = 32 };
    size_t i = 0, o = 0;
    while (is_space(*s)) s++;
    while (s[i] && i < MAX_SRC) {
        unsigned char c = (unsigned char)s[i];
        size_t n = 1;
        if (c >= 0xC0) n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (i + n > MAX_SRC || strnlen(s + i, n) < n) break;
        char esc[3] = { 0 };
        if (c == '\n' || c == '\t' || c == '\r') { esc[0] = '\\'; esc[1] = c == '\n' ? 'n' : c == '\t' ? 't' : 'r'; }
        else if (c < 0x20 || c == 0x7F) esc[0] = '?';
        const char *piece = esc[0] ? esc : s + i;
        size_t pn = esc[0] ? strlen(esc) : n;
        if (o + pn + 4 > cap) break;
        memcpy(buf + o, piece, pn);
        o += pn;
        i += n;
    }
    if (s[i] && o + 4 <= cap) { memcpy(buf + o, "...", 3); o += 3; }
    buf[o] = 0;
}

enum { ROLE_OTHER = 0, ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT };

static int role_of(const char *r) {
    if (strcmp(r, "system") == 0) return ROLE_SYSTEM;
    if (strcmp(r, "user") == 0) return ROLE_USER;
    if (strcmp(r, "assistant") == 0) return ROLE_ASSISTANT;
    return ROLE_OTHER;
}

/* Role names are written into the prompt by several formats ("<|im_start|>" role),
 * so only plain names are allowed: a role like "user<|im_end|>" cannot smuggle
 * markup in. Lowercase, as every format compares them lowercase. */
static bool role_name_ok(const char *r) {
    size_t n = 0;
    for (; r[n]; n++) {
        char c = r[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
        if (!ok || n >= TP_CHAT_MAX_ROLE_BYTES) return false;
    }
    return n > 0;
}

/* ------------------------------------------------------------ 3. renderers -- */

/* Text before and after a message's content. */
typedef struct {
    const char *pre, *post;
} wrap;

typedef enum {
    /* start, then per message: open ROLE mid CONTENT close (the role name as given) */
    K_TAGGED,
    /* per message: the role's pre CONTENT post, plus EOS after an assistant's when
     * asst_eos (the role names are fixed strings of the format) */
    K_MAPPED,
    /* formats with state across messages: a function each */
    K_LLAMA2,
    K_MISTRAL,
    K_GEMMA,
    K_ORION,
    K_MONARCH,
    K_GIGACHAT,
} render_kind;

/* variants of K_LLAMA2 and K_MISTRAL */
enum {
    LLAMA2_SYS = 1,      /* the system message gets <<SYS>> tags (else it is a line of the first [INST]) */
    LLAMA2_BOS = 2,      /* BOS before every [INST] after the first */
    MISTRAL_LEAD = 4,    /* " [INST]" and " [/INST]" (v1) */
    MISTRAL_TRAIL = 8,   /* "[INST] " and " answer" (v1, v3) */
    MISTRAL_TRIM_ASST = 16, /* assistant answers trimmed (v3) */
};

struct tp_chat_format {
    const char *name;
    const char *used_by;
    render_kind kind;
    bool any_role;          /* takes roles other than system/user/assistant (writes them as given) */
    bool trim;              /* contents are trimmed of surrounding white space */
    unsigned variant;       /* LLAMA2_* / MISTRAL_* */
    const char *eos;        /* EOS when the caller gives none (NULL: "</s>") */
    /* K_TAGGED */
    const char *start, *open, *mid, *close;
    /* K_MAPPED */
    wrap sys, user, asst;
    bool asst_eos;
    /* K_TAGGED, K_MAPPED, K_GEMMA, K_MONARCH, K_GIGACHAT: the generation prompt (NULL: none) */
    const char *gen;
};

/* The resolved BOS / EOS strings of one render. */
typedef struct {
    const char *bos, *eos;
} toks;

typedef struct {
    const tp_chat_format *f;
    const tp_chat_msg *m;
    size_t n;
    toks tk;
    bool gen;     /* add the generation prompt */
    out *o;
    char *err;    /* set by a renderer that refuses the conversation */
} job;

static bool render_tagged(job *j) {
    const tp_chat_format *f = j->f;
    if (f->start) put(j->o, f->start);
    for (size_t i = 0; i < j->n; i++) {
        put(j->o, f->open);
        put(j->o, j->m[i].role);
        put(j->o, f->mid);
        put_span(j->o, text_of(j->m[i].content, f->trim));
        put(j->o, f->close);
    }
    if (j->gen && f->gen) put(j->o, f->gen);
    return true;
}

static bool render_mapped(job *j) {
    const tp_chat_format *f = j->f;
    for (size_t i = 0; i < j->n; i++) {
        int r = role_of(j->m[i].role); /* checked: one of the three */
        const wrap *w = r == ROLE_SYSTEM ? &f->sys : r == ROLE_USER ? &f->user : &f->asst;
        put(j->o, w->pre);
        put_span(j->o, text_of(j->m[i].content, f->trim));
        put(j->o, w->post);
        if (r == ROLE_ASSISTANT && f->asst_eos) put(j->o, j->tk.eos);
    }
    if (j->gen && f->gen) put(j->o, f->gen);
    return true;
}

/* Llama 2: "[INST] user [/INST]answer</s>[INST] ...". The text opens inside the
 * first turn (its BOS is the tokenizer's); the system message goes into the first
 * turn, in <<SYS>> tags where the template has them. The user turn ends the text,
 * so there is no separate generation prompt. */
static bool render_llama2(job *j) {
    unsigned v = j->f->variant;
    bool inside = true;
    put(j->o, "[INST] ");
    for (size_t i = 0; i < j->n; i++) {
        span c = text_of(j->m[i].content, j->f->trim);
        int r = role_of(j->m[i].role);
        if (!inside) {
            inside = true;
            if (v & LLAMA2_BOS) put(j->o, j->tk.bos);
            put(j->o, "[INST] ");
        }
        if (r == ROLE_SYSTEM) {
            put(j->o, (v & LLAMA2_SYS) ? "<<SYS>>\n" : "");
            put_span(j->o, c);
            put(j->o, (v & LLAMA2_SYS) ? "\n<</SYS>>\n\n" : "\n");
        } else if (r == ROLE_USER) {
            put_span(j->o, c);
            put(j->o, " [/INST]");
        } else {
            put_span(j->o, c);
            put(j->o, j->tk.eos);
            inside = false;
        }
    }
    return true;
}

/* Mistral's official v1 / v3 / v3-tekken: like Llama 2 without <<SYS>>; the
 * versions differ only in the spaces around [INST] and the answer. */
static bool render_mistral(job *j) {
    unsigned v = j->f->variant;
    const char *lead = (v & MISTRAL_LEAD) ? " " : "", *trail = (v & MISTRAL_TRAIL) ? " " : "";
    bool inside = false;
    for (size_t i = 0; i < j->n; i++) {
        int r = role_of(j->m[i].role);
        if (!inside) {
            put(j->o, lead);
            put(j->o, "[INST]");
            put(j->o, trail);
            inside = true;
        }
        if (r == ROLE_SYSTEM) {
            put(j->o, j->m[i].content);
            put(j->o, "\n\n");
        } else if (r == ROLE_USER) {
            put(j->o, j->m[i].content);
            put(j->o, lead);
            put(j->o, "[/INST]");
        } else {
            put(j->o, trail);
            put_span(j->o, text_of(j->m[i].content, v & MISTRAL_TRIM_ASST));
            put(j->o, j->tk.eos);
            inside = false;
        }
    }
    return true;
}

/* Formats without a system role (Gemma, Orion) put the system text at the start of
 * the next user message. A system message with no user message after it would be
 * lost: refuse that instead. */
static bool system_left_over(job *j, bool pending) {
    if (pending) tp_fail(j->err, "the %s format has no system role: a system message must be followed by a user message",
                         j->f->name);
    return pending;
}

/* Gemma: <start_of_turn>user / model ... <end_of_turn>, contents trimmed. */
static bool render_gemma(job *j) {
    out sys = { 0 }; /* the pending system text */
    for (size_t i = 0; i < j->n; i++) {
        int r = role_of(j->m[i].role);
        span c = text_of(j->m[i].content, true);
        if (r == ROLE_SYSTEM) {
            put_span(&sys, c);
            continue;
        }
        put(j->o, "<start_of_turn>");
        put(j->o, r == ROLE_ASSISTANT ? "model" : "user");
        put(j->o, "\n");
        if (sys.len && r == ROLE_USER) {
            put_n(j->o, sys.s, sys.len);
            put(j->o, "\n\n");
            sys.len = 0;
        }
        put_span(j->o, c);
        put(j->o, "<end_of_turn>\n");
    }
    if (sys.state != OUT_OK) j->o->state = sys.state;
    free(sys.s);
    if (system_left_over(j, sys.len > 0)) return false;
    if (j->gen) put(j->o, j->f->gen);
    return true;
}

/* Orion: "Human: ...\n\nAssistant: </s>answer</s>"; the generation prompt is part
 * of every user turn. */
static bool render_orion(job *j) {
    out sys = { 0 };
    for (size_t i = 0; i < j->n; i++) {
        int r = role_of(j->m[i].role);
        if (r == ROLE_SYSTEM) {
            put(&sys, j->m[i].content);
        } else if (r == ROLE_USER) {
            put(j->o, "Human: ");
            if (sys.len) {
                put_n(j->o, sys.s, sys.len);
                put(j->o, "\n\n");
                sys.len = 0;
            }
            put(j->o, j->m[i].content);
            put(j->o, "\n\nAssistant: ");
            put(j->o, j->tk.eos);
        } else {
            put(j->o, j->m[i].content);
            put(j->o, j->tk.eos);
        }
    }
    if (sys.state != OUT_OK) j->o->state = sys.state;
    free(sys.s);
    return !system_left_over(j, sys.len > 0);
}

/* AlphaMonarch: "role\ncontent</s>\n" with BOS before every message but the first. */
static bool render_monarch(job *j) {
    for (size_t i = 0; i < j->n; i++) {
        if (i > 0) put(j->o, j->tk.bos);
        put(j->o, j->m[i].role);
        put(j->o, "\n");
        put(j->o, j->m[i].content);
        put(j->o, j->tk.eos);
        put(j->o, "\n");
    }
    if (j->gen) {
        put(j->o, j->tk.bos);
        put(j->o, j->f->gen);
    }
    return true;
}

/* GigaChat: starts with BOS (see chat.h), then the system text; every user turn
 * lists the (here: no) available functions. A system message only comes first. */
static bool render_gigachat(job *j) {
    size_t i = 0;
    put(j->o, j->tk.bos);
    if (j->n && role_of(j->m[0].role) == ROLE_SYSTEM) {
        put(j->o, j->m[0].content);
        put(j->o, "<|message_sep|>");
        i = 1;
    }
    for (; i < j->n; i++) {
        int r = role_of(j->m[i].role);
        if (r == ROLE_SYSTEM) {
            tp_fail(j->err, "message %zu: the gigachat format takes a system message only first", i);
            return false;
        }
        put(j->o, r == ROLE_USER ? "user<|role_sep|>" : "assistant<|role_sep|>");
        put(j->o, j->m[i].content);
        put(j->o, "<|message_sep|>");
        if (r == ROLE_USER) put(j->o, "available functions<|role_sep|>[]<|message_sep|>");
    }
    if (j->gen) put(j->o, j->f->gen);
    return true;
}

static bool (*const k_render[])(job *) = {
    [K_TAGGED] = render_tagged,   [K_MAPPED] = render_mapped, [K_LLAMA2] = render_llama2,
    [K_MISTRAL] = render_mistral, [K_GEMMA] = render_gemma,   [K_ORION] = render_orion,
    [K_MONARCH] = render_monarch, [K_GIGACHAT] = render_gigachat,
};

/* -------------------------------------------------------- 4. format table -- */

/* One entry per format: its name (what --chat-template takes; llama.cpp's names, so
 * users can carry theirs over), the models it is for, and its renderer with the
 * strings that renderer writes. Every format but llama2-sys, mistral-v7-tekken and
 * plain is held to llama.cpp's rendering of a real template by the tests; those
 * three follow from their siblings and are tested on their own. The order is the
 * order of the names in --help and in errors. */

#define TAGGED(start_, open_, mid_, close_, gen_) \
    .kind = K_TAGGED, .any_role = true, .start = start_, .open = open_, .mid = mid_, .close = close_, .gen = gen_
#define MAPPED(s_pre, s_post, u_pre, u_post, a_pre, a_post, gen_)                                              \
    .kind = K_MAPPED, .sys = { s_pre, s_post }, .user = { u_pre, u_post }, .asst = { a_pre, a_post }, \
    .gen = gen_

static const tp_chat_format k_formats[] = {
    { .name = "llama3", .used_by = "Llama 3 / 3.1 / 3.2 / 3.3", .trim = true,
      TAGGED(NULL, "<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>",
             "<|start_header_id|>assistant<|end_header_id|>\n\n") },
    { .name = "llama2", .used_by = "Llama 2 style without <<SYS>> (e.g. Mistral 7B Instruct v0.2's first template)",
      .kind = K_LLAMA2 },
    { .name = "llama2-sys", .used_by = "Llama 2 style with <<SYS>>", .kind = K_LLAMA2, .variant = LLAMA2_SYS },
    { .name = "llama2-sys-bos", .used_by = "Llama 2 style with <<SYS>> and BOS between turns", .kind = K_LLAMA2,
      .variant = LLAMA2_SYS | LLAMA2_BOS },
    { .name = "llama2-sys-strip", .used_by = "Llama 2 chat (Meta's template), Vigogne", .kind = K_LLAMA2,
      .variant = LLAMA2_SYS, .trim = true },
    { .name = "mistral-v1", .used_by = "Mistral's official v1 template (e.g. 7B Instruct v0.2)", .kind = K_MISTRAL,
      .variant = MISTRAL_LEAD | MISTRAL_TRAIL },
    { .name = "mistral-v3", .used_by = "Mistral's official v3 template (e.g. Large 2407)", .kind = K_MISTRAL,
      .variant = MISTRAL_TRAIL | MISTRAL_TRIM_ASST },
    { .name = "mistral-v3-tekken", .used_by = "Mistral's official v3-tekken template (e.g. Nemo 2407)",
      .kind = K_MISTRAL },
    { .name = "mistral-v7", .used_by = "Mistral's v7 template (e.g. Large 2411)", .asst_eos = true,
      MAPPED("[SYSTEM_PROMPT] ", "[/SYSTEM_PROMPT]", "[INST] ", "[/INST]", " ", "", NULL) },
    { .name = "mistral-v7-tekken", .used_by = "Mistral's v7-tekken template (e.g. Small 3.1)", .asst_eos = true,
      MAPPED("[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[INST]", "[/INST]", "", "", NULL) },
    { .name = "chatml", .used_by = "ChatML (OpenHermes, Qwen, Hermes, many fine-tunes)",
      TAGGED(NULL, "<|im_start|>", "\n", "<|im_end|>\n", "<|im_start|>assistant\n") },
    { .name = "phi3", .used_by = "Phi-3",
      TAGGED(NULL, "<|", "|>\n", "<|end|>\n", "<|assistant|>\n") },
    { .name = "phi4", .used_by = "Phi-4",
      TAGGED(NULL, "<|im_start|>", "<|im_sep|>", "<|im_end|>", "<|im_start|>assistant<|im_sep|>") },
    { .name = "gemma", .used_by = "Gemma (system text joins the first user turn)", .kind = K_GEMMA,
      .gen = "<start_of_turn>model\n" },
    { .name = "command-r", .used_by = "Command-R / R+", .trim = true,
      MAPPED("<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>", "<|END_OF_TURN_TOKEN|>",
             "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>", "<|END_OF_TURN_TOKEN|>",
             "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>", "<|END_OF_TURN_TOKEN|>",
             "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>") },
    { .name = "granite", .used_by = "IBM Granite 3",
      TAGGED(NULL, "<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>\n",
             "<|start_of_role|>assistant<|end_of_role|>\n") },
    { .name = "deepseek", .used_by = "DeepSeek Coder",
      MAPPED("", "", "### Instruction:\n", "\n", "### Response:\n", "\n<|EOT|>\n", "### Response:\n") },
    { .name = "deepseek2", .used_by = "DeepSeek V2", .asst_eos = true, .eos = "<｜end▁of▁sentence｜>",
      MAPPED("", "\n\n", "User: ", "\n\n", "Assistant: ", "", "Assistant:") },
    { .name = "vicuna", .used_by = "Vicuna 1.1",
      MAPPED("", "\n\n", "USER: ", "\n", "ASSISTANT: ", "</s>\n", "ASSISTANT:") },
    { .name = "vicuna-orca", .used_by = "Orca-Vicuna",
      MAPPED("SYSTEM: ", "\n", "USER: ", "\n", "ASSISTANT: ", "</s>\n", "ASSISTANT:") },
    { .name = "openchat", .used_by = "OpenChat 3.5",
      MAPPED("", "<|end_of_turn|>", "GPT4 Correct User: ", "<|end_of_turn|>", "GPT4 Correct Assistant: ",
             "<|end_of_turn|>", "GPT4 Correct Assistant:") },
    { .name = "orion", .used_by = "Orion (system text joins the first user turn)", .kind = K_ORION },
    { .name = "monarch", .used_by = "AlphaMonarch", .kind = K_MONARCH, .any_role = true, .gen = "assistant\n" },
    { .name = "minicpm", .used_by = "MiniCPM", .trim = true,
      MAPPED("", "", "<用户>", "<AI>", "", "", NULL) },
    { .name = "chatglm3", .used_by = "ChatGLM3",
      TAGGED("[gMASK]sop", "<|", "|>\n ", "", "<|assistant|>") },
    { .name = "chatglm4", .used_by = "ChatGLM4",
      TAGGED("[gMASK]<sop>", "<|", "|>\n", "", "<|assistant|>") },
    { .name = "glmedge", .used_by = "GLM-Edge",
      TAGGED(NULL, "<|", "|>\n", "", "<|assistant|>") },
    { .name = "megrez", .used_by = "Megrez",
      TAGGED(NULL, "<|role_start|>", "<|role_end|>", "<|turn_end|>", "<|role_start|>assistant<|role_end|>") },
    { .name = "gigachat", .used_by = "GigaChat", .kind = K_GIGACHAT, .gen = "assistant<|role_sep|>" },
    { .name = "plain", .used_by = "tempo's fallback for models without a template (System: / User: / Assistant:)",
      MAPPED("System: ", "\n\n", "User: ", "\n\n", "Assistant: ", "\n\n", "Assistant:") },
};
#define N_FORMATS ((int)(sizeof k_formats / sizeof k_formats[0]))

/* ------------------------------------------------- 5. names and lookup -- */

int tp_chat_format_count(void) { return N_FORMATS; }

const tp_chat_format *tp_chat_format_at(int i) { return i >= 0 && i < N_FORMATS ? &k_formats[i] : NULL; }

const char *tp_chat_format_name(const tp_chat_format *f) { return f ? f->name : NULL; }

const char *tp_chat_format_used_by(const tp_chat_format *f) { return f ? f->used_by : NULL; }

size_t tp_chat_format_names(char *buf, size_t cap) {
    size_t len = 0;
    for (int i = 0; i < N_FORMATS; i++) {
        const char *sep = i ? ", " : "";
        for (const char *p = sep; *p; p++, len++)
            if (len + 1 < cap) buf[len] = *p;
        for (const char *p = k_formats[i].name; *p; p++, len++)
            if (len + 1 < cap) buf[len] = *p;
    }
    if (cap) buf[len < cap ? len : cap - 1] = 0;
    return len;
}

static const tp_chat_format *find_name(const char *name) {
    for (int i = 0; name && i < N_FORMATS; i++)
        if (strcmp(k_formats[i].name, name) == 0) return &k_formats[i];
    return NULL;
}

const tp_chat_format *tp_chat_format_by_name(const char *name, char *err) {
    const tp_chat_format *f = find_name(name);
    if (!f) {
        char ex[128], names[TP_ERR_LEN];
        excerpt(name ? name : "", ex, sizeof ex);
        tp_chat_format_names(names, sizeof names);
        tp_fail(err, "unknown chat template '%s' (one of: %s)", ex, names);
    }
    return f;
}

/* --------------------------------------------- 6. detection from templates -- */

static bool has(const char *tmpl, const char *marker) { return strstr(tmpl, marker) != NULL; }

/* The name of the format a template is written for, or NULL. Each test is a string
 * that only that format's templates contain; the order matters where a template
 * holds markers of two tests (a Phi-3 template also has "<|assistant|>", which
 * GLM-Edge's test looks for, so Phi-3 is tested first). */
static const char *detect_name(const char *t) {
    if (has(t, "<|im_start|>")) return has(t, "<|im_sep|>") ? "phi4" : "chatml";
    if (has(t, "[INST]")) {
        /* Mistral v7 has a system prompt of its own; the tekken variant writes no
         * space after its tags */
        if (has(t, "[SYSTEM_PROMPT]")) return has(t, "[SYSTEM_PROMPT] ") ? "mistral-v7" : "mistral-v7-tekken";
        /* Mistral's official v1 / v3 / v3-tekken templates (the tool-calling ones
         * of v3 list [AVAILABLE_TOOLS]) */
        if (has(t, "' [INST] ' + system_message") || has(t, "[AVAILABLE_TOOLS]")) {
            if (has(t, " [INST]")) return "mistral-v1";
            if (has(t, "\"[INST]\"")) return "mistral-v3-tekken";
            return "mistral-v3";
        }
        /* Llama 2 and the templates written after it */
        if (has(t, "content.strip()")) return "llama2-sys-strip";
        if (has(t, "bos_token + '[INST]")) return "llama2-sys-bos";
        if (has(t, "<<SYS>>")) return "llama2-sys";
        return "llama2";
    }
    if (has(t, "<|assistant|>") && has(t, "<|end|>")) return "phi3";
    if (has(t, "[gMASK]<sop>")) return "chatglm4";
    if (has(t, "[gMASK]sop")) return "chatglm3";
    /* GLM-Edge ends no message with an EOS; Zephyr-style templates that use the
     * same tags do (eos_token, </s>, <|endoftext|>) and are a different format */
    if (has(t, "<|assistant|>") && has(t, "<|user|>") && !has(t, "eos_token") && !has(t, "</s>") &&
        !has(t, "<|endoftext|>"))
        return "glmedge";
    if (has(t, "bos_token + message['role']")) return "monarch";
    if (has(t, "<start_of_turn>")) return "gemma";
    if (has(t, "'\\n\\nAssistant: ' + eos_token")) return "orion";
    if (has(t, "GPT4 Correct ")) return "openchat";
    if (has(t, "USER: ") && has(t, "ASSISTANT: ")) return has(t, "SYSTEM: ") ? "vicuna-orca" : "vicuna";
    if (has(t, "### Instruction:") && has(t, "<|EOT|>")) return "deepseek";
    if (has(t, "<|START_OF_TURN_TOKEN|>") && has(t, "<|USER_TOKEN|>")) return "command-r";
    if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>")) return "llama3";
    if (has(t, "<用户>")) return "minicpm";
    if (has(t, "'Assistant: ' + message['content'] + eos_token")) return "deepseek2";
    if (has(t, "<|start_of_role|>")) return "granite";
    if (has(t, "message['role'] + additional_special_tokens[0] + message['content'] + additional_special_tokens[1]"))
        return "gigachat";
    if (has(t, "<|role_start|>")) return "megrez";
    return NULL;
}

/* Formats tempo does not render, recognised only to say so. Tested before the
 * supported ones: SmolVLM's templates contain <|im_start|> but are not ChatML. */
static const struct {
    const char *marker, *what;
} k_unsupported[] = {
    { "<end_of_utterance>", "SmolVLM" },
    { "<|header_start|>", "Llama 4" },
    { "<｜Assistant｜>", "DeepSeek V3 / R1" },
    { "[|endofturn|]", "EXAONE" },
};

const tp_chat_format *tp_chat_format_detect(const char *tmpl, char *err) {
    if (!tmpl) return tp_fail(err, "no chat template"), NULL;
    const tp_chat_format *f = find_name(tmpl); /* "--chat-template chatml" style */
    if (f) return f;
    char ex[128], names[TP_ERR_LEN];
    excerpt(tmpl, ex, sizeof ex);
    tp_chat_format_names(names, sizeof names);
    for (size_t i = 0; i < sizeof k_unsupported / sizeof k_unsupported[0]; i++)
        if (has(tmpl, k_unsupported[i].marker)) {
            tp_fail(err, "chat template \"%s\" is %s's format, which tempo does not render; "
                         "use --chat-template with one of: %s", ex, k_unsupported[i].what, names);
            return NULL;
        }
    const char *name = detect_name(tmpl);
    if (!name) {
        tp_fail(err, "chat template \"%s\" is not one tempo recognises; use --chat-template with one of: %s", ex,
                names);
        return NULL;
    }
    return find_name(name);
}

/* ------------------------------------------------------ 7. tp_chat_render -- */

char *tp_chat_render(const tp_chat_format *f, const tp_chat_msg *msgs, size_t n, const char *bos,
                     const char *eos, bool add_generation_prompt, char *err) {
    if (!f) return tp_fail(err, "chat: no format"), NULL;
    if (n == 0 || !msgs) return tp_fail(err, "chat: no messages"), NULL;
    if (n > TP_CHAT_MAX_MESSAGES)
        return tp_fail(err, "chat: %zu messages, more than the limit of %d", n, TP_CHAT_MAX_MESSAGES), NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role, *c = msgs[i].content;
        if (!r || !c) return tp_fail(err, "chat: message %zu has no %s", i, r ? "content" : "role"), NULL;
        if (!role_name_ok(r))
            return tp_fail(err, "chat: message %zu: role '%.40s' is not a role name (1 to %d of a-z, 0-9, _ and -)", i,
                           r, TP_CHAT_MAX_ROLE_BYTES), NULL;
        if (!f->any_role && role_of(r) == ROLE_OTHER)
            return tp_fail(err, "chat: message %zu: the %s format has no role '%s' (system, user, assistant)", i,
                           f->name, r), NULL;
        /* strnlen: a huge content is not scanned to its end just to be refused */
        size_t left = TP_CHAT_MAX_CONTENT_BYTES - total, len = strnlen(c, left + 1);
        if (len > left)
            return tp_fail(err, "chat: the messages hold more than %u bytes of text (at message %zu)",
                           TP_CHAT_MAX_CONTENT_BYTES, i), NULL;
        total += len;
    }
    toks tk = { bos && *bos ? bos : "<s>", eos && *eos ? eos : (f->eos ? f->eos : "</s>") };
    if (strlen(tk.bos) > TP_CHAT_MAX_TOKEN_BYTES || strlen(tk.eos) > TP_CHAT_MAX_TOKEN_BYTES)
        return tp_fail(err, "chat: a BOS/EOS token string is longer than %d bytes", TP_CHAT_MAX_TOKEN_BYTES), NULL;

    out o = { 0 };
    job j = { .f = f, .m = msgs, .n = n, .tk = tk, .gen = add_generation_prompt, .o = &o, .err = err };
    bool ok = k_render[f->kind](&j); /* false: the renderer wrote err */
    if (ok && o.state == OUT_OK && !o.s) { /* nothing written (minicpm, one empty message) */
        o.s = calloc(1, 1);
        if (!o.s) o.state = OUT_NO_MEMORY;
    }
    if (ok && o.state == OUT_TOO_LONG) {
        tp_fail(err, "chat: the rendered conversation passes %zu bytes", MAX_OUTPUT_BYTES);
        ok = false;
    } else if (ok && o.state == OUT_NO_MEMORY) {
        tp_fail(err, "chat: out of memory rendering %zu bytes", o.len);
        ok = false;
    }
    if (!ok) {
        free(o.s);
        return NULL;
    }
    return o.s;
}

/* ------------------------------------------------- 8. the model's format -- */

const tp_chat_format *tp_chat_format_default(const struct tokenizer *t) {
    bool llama3 = t && tp_tokenizer_find(t, "<|start_header_id|>") >= 0 &&
                  tp_tokenizer_find(t, "<|end_header_id|>") >= 0 && tp_tokenizer_find(t, "<|eot_id|>") >= 0;
    return find_name(llama3 ? "llama3" : "plain");
}

const tp_chat_format *tp_chat_format_for(const struct tokenizer *t, const char *forced, char *err) {
    if (forced && *forced) {
        /* a Jinja text given on the command line, as llama.cpp's --chat-template takes */
        if (!find_name(forced) && (has(forced, "{{") || has(forced, "{%"))) return tp_chat_format_detect(forced, err);
        return tp_chat_format_by_name(forced, err);
    }
    const char *tmpl = t ? tp_tokenizer_chat_template(t) : NULL;
    if (tmpl) return tp_chat_format_detect(tmpl, err);
    return tp_chat_format_default(t);
}

/* The text of a special token, or NULL (the format's default) when there is none. */
static const char *token_string(const struct tokenizer *t, int id) {
    return t && id >= 0 ? tp_tokenizer_token_text(t, id) : NULL;
}

char *tp_chat_apply(const struct tokenizer *t, const char *forced, const tp_chat_msg *msgs, size_t n,
                    bool add_generation_prompt, char *err) {
    const tp_chat_format *f = tp_chat_format_for(t, forced, err);
    if (!f) return NULL;
    return tp_chat_render(f, msgs, n, token_string(t, t ? tp_tokenizer_bos(t) : -1),
                          token_string(t, t ? tp_tokenizer_eos(t) : -1), add_generation_prompt, err);
}

char *tp_chat_thinking_prompt(const struct tokenizer *t, const char *forced, const char *user_prompt, char *err) {
    const tp_chat_msg m[2] = {
        { "system", TP_CHAT_THINKING_SYSTEM },
        { "user", user_prompt ? user_prompt : "" },
    };
    return tp_chat_apply(t, forced, m, 2, true, err);
}
