/* devices.c: the devices section of include/tempo.h (`tempo devices`). */
#include "api/api.h"

#include <stdio.h>
#include <string.h>

#include "core/common.h"
#include "gpu/gpu.h"
#include "gpu/backend.h"

bool tempo_gpu_built(void) { return tp_gpu_built(); }

int tempo_devices(tempo_device_info *out, int cap) {
    tp_gpu_device_info d[16];
    char err[TP_ERR_LEN] = "";
    int n = tp_gpu_devices(d, 16, err);
    if (n < 0) return 0;
    for (int i = 0; i < n && i < 16 && i < cap; i++) {
        tempo_device_info *o = &out[i];
        memset(o, 0, sizeof *o);
        o->index = d[i].index;
        snprintf(o->name, sizeof o->name, "%s", d[i].name);
        o->kind = d[i].kind;
        o->software = d[i].software;
        o->usable = d[i].usable;
        snprintf(o->missing, sizeof o->missing, "%s", d[i].missing);
        o->memory_gb = (double)d[i].memory_bytes / (1024.0 * 1024.0 * 1024.0);
        o->free_gb = (double)d[i].free_bytes / (1024.0 * 1024.0 * 1024.0);
        o->free_known = d[i].free_known;
        snprintf(o->api, sizeof o->api, "%s", d[i].api);
        snprintf(o->driver, sizeof o->driver, "%s", d[i].driver);
    }
    return n;
}

const char *tempo_device_resolve(const char *device, char *buf, size_t cap, tempo_error *err) {
    char msg[TEMPO_ERR_LEN] = "";
    const char *r = tp_device_resolve(device, false, buf, cap, msg);
    if (!r) tp_set_error(err, TEMPO_ERR_ARG, "%s", msg);
    else tp_ok(err);
    return r;
}
