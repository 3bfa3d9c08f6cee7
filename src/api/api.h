/* api.h: helpers shared by the public API's implementation (src/api). Internal.
 *
 * The API layer turns the library's internal "char *err" messages into tempo_error values
 * (a status code and the message) and keeps the option table of tempo_config.
 */
#ifndef TEMPO_API_H
#define TEMPO_API_H

#include "tempo.h"

/* Fill err (may be NULL) with code and a formatted message; returns -1. */
int tp_set_error(tempo_error *err, tempo_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* err = TEMPO_OK, "". */
void tp_ok(tempo_error *err);

/* tempo_config_set with a plain message buffer (TEMPO_ERR_LEN). */
int tp_config_set(tempo_config *c, const char *key, const char *value, char *err);
/* Put option `key` back to its default (a YAML null); marks it given. 0, or -1 for no such key. */
int tp_config_reset(tempo_config *c, const char *key);

#endif
