/* text.h: what the user reads (design/tempo-semantics.md section 7): the bracket
 * text (one token, or [a/b/c] with the alive members in selection order), its
 * coloured terminal form, clean_text, and a growable string for building them.
 */
#ifndef TEMPO_OUTPUT_TEXT_H
#define TEMPO_OUTPUT_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#include "tempo.h"

typedef struct {
    char *buf;
    size_t len, cap;
    bool failed;   /* an allocation failed: appends stop, tp_str_take returns NULL */
} tp_str;

void tp_str_append(tp_str *s, const char *p, size_t n);
void tp_str_cat(tp_str *s, const char *p);
void tp_str_printf(tp_str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The built string (malloc'ed; "" when empty; NULL when an allocation failed); s is left empty. */
char *tp_str_take(tp_str *s);

/* ANSI colour of member index j (cycles through six colours). */
const char *tp_text_color(int j);
#define TP_TEXT_RESET "\x1b[0m"

/* Append one step: its single alive member, or [a/b/c] over the alive members.
 * color: each member of a multi-member set in its index's colour.
 * show_ids: each member followed by "(id)". */
void tp_text_append_step(tp_str *s, const tempo_step *st, bool color, bool show_ids);
/* The same with the members' raw bytes and no colour (for texts made readable as a whole). */
void tp_text_append_step_raw(tp_str *s, const tempo_step *st, bool show_ids);
/* Append text as shown to a user: valid UTF-8 as it is, every other byte as <0xNN>. */
void tp_text_display_append(tp_str *s, const char *text);
/* Is text valid UTF-8? */
bool tp_text_is_utf8(const char *text);
/* The alive member with the highest selection probability (ties: lower id), or NULL. */
const tempo_token *tp_text_clean_member(const tempo_step *st);

/* prompt + every step in bracket form, no escape codes, made readable as a whole (malloc'ed;
 * NULL on out of memory). */
char *tp_text_generated(const char *prompt, const tempo_step *steps, int n, bool show_ids);
/* prompt + per step the clean member's text (malloc'ed). */
char *tp_text_clean(const char *prompt, const tempo_step *steps, int n);

/* A copy of s with every invalid UTF-8 sequence replaced by U+FFFD (malloc'ed),
 * so a token that is a fragment of a character still makes valid JSON. */
char *tp_utf8_sanitize(const char *s);

#endif
