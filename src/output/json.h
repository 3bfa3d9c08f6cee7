/* json.h: the JSON document of design/tempo-semantics.md section 7. */
#ifndef TEMPO_OUTPUT_JSON_H
#define TEMPO_OUTPUT_JSON_H

#include "tempo.h"

/* Pretty-printed document (malloc'ed): prompt, generated_text, clean_text, steps,
 * config (every option's effective value), metrics, stop_reason, stop_message,
 * adjustments. Strings are repaired to valid UTF-8. */
char *tp_json_result(const tempo_result *r, const tempo_config *cfg);

#endif
