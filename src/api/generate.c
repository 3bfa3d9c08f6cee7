/* generate.c: the public generation entry points of include/tempo.h. */
#include "tempo.h"

#include "output/json.h"
#include "tempo/generate.h"

tempo_result *tempo_generate(tempo_model *m, const tempo_config *cfg, tempo_step_cb cb, void *user, char *err) {
    return tp_tempo_generate(m, cfg, NULL, cb, user, err);
}

void tempo_result_free(tempo_result *r) { tp_tempo_result_free(r); }

char *tempo_result_to_json(const tempo_result *r, const tempo_config *cfg) { return tp_json_result(r, cfg); }
