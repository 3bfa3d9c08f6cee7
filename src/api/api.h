/* api.h: what sits behind the public handles of include/tempo.h. Internal. */
#ifndef TEMPO_API_H
#define TEMPO_API_H

#include "tempo.h"
#include "model/model.h"

struct tempo_model {
    tp_model *m;
    tempo_memory_monitor *mon;   /* created at open with cfg->max_memory_gb */
    char *path;
};

#endif
