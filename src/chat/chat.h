/* chat.h: chat formats -- turning a conversation of {role, content} messages into
 * the one prompt text a chat model was trained on.
 *
 * Models publish their format as a Jinja template (GGUF tokenizer.chat_template,
 * tokenizer_config.json chat_template). tempo does not run Jinja: like llama.cpp's
 * llm_chat_detect_template it recognises the template by strings only that format's
 * templates contain, and renders the conversation with that format's built-in
 * rules. The renderings match llama.cpp's built-in formats byte for byte (tested on
 * llama.cpp's 30 real templates, ../shared/chat-templates/). A template that is not
 * recognised is refused with its first bytes and the supported names, so the user
 * can pick one with --chat-template NAME.
 *
 * BOS and EOS. A BOS at the very start of the text is never written: the tokenizer
 * adds it when the model asks for it (tp_tokenizer_encode with add_bos), as with
 * llama.cpp. BOS/EOS tokens inside the conversation are written as the token
 * strings passed in (NULL or "" means the format's usual "<s>" / "</s>"). The one
 * exception is gigachat, whose text starts with BOS because its models do not add
 * one (as llama.cpp renders it).
 *
 * The text may contain special-token spellings ("<|eot_id|>"): encode it with
 * parse_special, and note that message contents can spell them too.
 *
 * No printing, no abort: failures return NULL with one line in err (TP_ERR_LEN).
 * Everything here is thread-safe (the format table is constant).
 */
#ifndef TEMPO_CHAT_H
#define TEMPO_CHAT_H

#include <stdbool.h>
#include <stddef.h>

struct tokenizer;

/* Limits checked before rendering. A 128k-token context is about 0.5 MiB of text,
 * so these only stop absurd input (a server's request body) early. */
#define TP_CHAT_MAX_MESSAGES 10000
#define TP_CHAT_MAX_CONTENT_BYTES (16u << 20) /* all contents together */
#define TP_CHAT_MAX_TOKEN_BYTES 256           /* a bos/eos token string */
#define TP_CHAT_MAX_ROLE_BYTES 32

/* One message. role: "system", "user" or "assistant" (formats that write the role
 * name as it is, like chatml or llama3, also take others such as "tool"); a role is
 * 1..32 of [a-z0-9_-]. content: UTF-8 text, NUL-terminated. */
typedef struct {
    const char *role;
    const char *content;
} tp_chat_msg;

/* A chat format: one entry of a constant table (never freed). */
typedef struct tp_chat_format tp_chat_format;

/* ---- the supported formats ---- */
int tp_chat_format_count(void);
const tp_chat_format *tp_chat_format_at(int i); /* NULL out of range */
const char *tp_chat_format_name(const tp_chat_format *f);    /* e.g. "llama3" */
const char *tp_chat_format_used_by(const tp_chat_format *f); /* e.g. "Llama 3 / 3.1 / 3.2 / 3.3" */
/* "chatml, llama2, ..., plain" into buf (truncated to cap, always NUL-terminated);
 * returns the full length, as snprintf does. For --help and error messages. */
size_t tp_chat_format_names(char *buf, size_t cap);

/* The format called name; NULL and err naming it and listing the names if none. */
const tp_chat_format *tp_chat_format_by_name(const char *name, char *err);

/* The format a Jinja template is written for, recognised by its marker strings.
 * A template that is exactly a format's name selects that format. NULL and err
 * (a short excerpt of the template and the supported names) if not recognised. */
const tp_chat_format *tp_chat_format_detect(const char *tmpl, char *err);

/* Render msgs[0..n) (n >= 1). add_generation_prompt: end with the opening of the
 * assistant's reply (formats whose user turn already ends there, like llama2's
 * "[/INST]", write nothing more). bos/eos: the model's token strings, see above.
 * Returns a malloc'ed NUL-terminated text, or NULL and err (bad role, too many
 * messages, too much text, a role the format cannot express, out of memory). */
char *tp_chat_render(const tp_chat_format *f, const tp_chat_msg *msgs, size_t n, const char *bos,
                     const char *eos, bool add_generation_prompt, char *err);

/* ---- a model's format ---- */

/* What a model with no chat template gets: llama3 when its vocabulary has the
 * Llama 3 header tokens (<|start_header_id|>, <|end_header_id|>, <|eot_id|>), else
 * "plain" (System: / User: / Assistant: lines). t may be NULL (plain). */
const tp_chat_format *tp_chat_format_default(const struct tokenizer *t);

/* The format to use for a model: forced (--chat-template) when given -- a format
 * name, or a Jinja template text (contains "{{" or "{%"), which is recognised --
 * else the tokenizer's template (tp_tokenizer_chat_template) recognised, else the
 * default above. NULL and err when the forced name or the template is unknown. */
const tp_chat_format *tp_chat_format_for(const struct tokenizer *t, const char *forced, char *err);

/* tp_chat_format_for + tp_chat_render with the tokenizer's BOS/EOS token strings:
 * what a server or REPL calls. */
char *tp_chat_apply(const struct tokenizer *t, const char *forced, const tp_chat_msg *msgs, size_t n,
                    bool add_generation_prompt, char *err);

/* --enable-thinking: [system "Enable deep thinking subroutine.", user user_prompt]
 * with the generation prompt, in the model's format (forced as above; NULL: none). */
#define TP_CHAT_THINKING_SYSTEM "Enable deep thinking subroutine."
char *tp_chat_thinking_prompt(const struct tokenizer *t, const char *forced, const char *user_prompt, char *err);

#endif
