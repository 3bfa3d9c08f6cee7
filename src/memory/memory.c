/* memory.c: the memory monitor (tempo.h "memory" section, memory.h).
 *
 * Stats come from /proc/meminfo (MemTotal, MemAvailable) and /proc/self/status
 * (VmRSS, VmHWM). Accounted bytes are told to the monitor by the engine (model,
 * KV cache, work buffers); usage is the larger of accounted and measured.
 */
#include "memory/memory.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "core/jsonbuild.h"
#include "gpu/gpu.h"
#include "gpu/backend.h"
#include "model/model.h"

/* The lock guards the session sums (kv, work, records, sessions): sessions of one model run on
 * many threads. The limit, other and weights are set while the model is opened. */
struct tempo_memory_monitor {
    pthread_mutex_t lock;
    double max_gb;
    size_t limit;                         /* max_gb in bytes */
    size_t other, weights;                /* accounted bytes: runtime, model */
    size_t kv, work, records;             /* accounted bytes: sums over the live sessions */
    size_t device;                        /* accounted: the live sessions' GPU shares */
    int sessions;
    /* a model on a GPU (tp_memory_set_model): the device, its weight bytes there, and whether
     * the device's memory is this process's own (a software device: then it is in VmRSS too) */
    const struct tp_gpu *gpu;
    size_t gpu_weights;
    bool gpu_in_rss;
};

/* ------------------------------------------------------------- /proc ---- */

/* Read a small /proc file into buf (no allocation). Returns bytes read or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = 0;
    return (ssize_t)len;
}

/* Value of "Key:   1234 kB" in /proc text, in bytes; 0 when absent. */
static uint64_t kb_field(const char *text, const char *key) {
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ':') return strtoull(p + kl + 1, NULL, 10) * 1024u;
    }
    return 0;
}

int tp_memory_read_proc(tp_proc_mem *out) {
    char buf[4096];
    int ok = 0;
    memset(out, 0, sizeof *out);
    if (read_small("/proc/meminfo", buf, sizeof buf) > 0) {
        out->mem_total = kb_field(buf, "MemTotal");
        out->mem_available = kb_field(buf, "MemAvailable");
        ok++;
    }
    if (read_small("/proc/self/status", buf, sizeof buf) > 0) {
        out->vm_rss = kb_field(buf, "VmRSS");
        out->vm_hwm = kb_field(buf, "VmHWM");
        ok++;
    }
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------ limits ---- */

int tp_memory_check_model_fits(double max_memory_gb, int64_t model_bytes, char *err) {
    double limit = max_memory_gb * TP_GB;
    if ((double)model_bytes <= limit) return 0;
    char a[32], b[32];
    return tp_fail(err,
                   "model needs %s of weights but --max-memory-gb is %s: raise --max-memory-gb to more than %s "
                   "(weights, KV cache and work buffers must all fit) or use a smaller or quantized model",
                   tp_fmt_gb((double)model_bytes, a, sizeof a), tp_fmt_gb(limit, b, sizeof b),
                   tp_fmt_gb((double)model_bytes, a, sizeof a));
}

/* How far the kernel's resident-set count may lag behind the pages really mapped: Linux keeps
 * it in per-CPU counters folded in batches (at most max(32, 2 x CPUs) pages per CPU), and reads
 * the total without folding. The measured side of usage adds this, so a limit a few MB wide is
 * not passed by what the counter has not caught up with yet. */
static size_t rss_slack(void) {
    static size_t slack;
    if (!slack) {
        long cpus = sysconf(_SC_NPROCESSORS_CONF), page = sysconf(_SC_PAGESIZE);
        if (cpus < 1) cpus = 1;
        if (page < 1) page = 4096;
        long batch = 2 * cpus > 32 ? 2 * cpus : 32;
        slack = (size_t)(batch * cpus * page); /* benign race: every thread computes the same value */
    }
    return slack;
}

int tp_memory_check_load_room(double max_memory_gb, size_t more_bytes, const char *when, char *err) {
    tp_proc_mem pm;
    if (tp_memory_read_proc(&pm) != 0) return 0; /* nothing to measure with: the limits after loading still apply */
    double crit = TP_MEM_CRITICAL_FRACTION * max_memory_gb * TP_GB;
    double need = (double)pm.vm_rss + (double)rss_slack() + (double)more_bytes;
    if (need < crit) return 0;
    char a[32], b[32], c[32];
    return tp_fail(err,
                   "Memory critical during model loading: %s the process holds and %s of weights still to read in make %s, "
                   "%.1f%% of --max-memory-gb %s (critical level 95%%). Raise --max-memory-gb, or use a smaller or quantized model",
                   tp_fmt_gb((double)pm.vm_rss, a, sizeof a), tp_fmt_gb((double)more_bytes, b, sizeof b),
                   when, 100.0 * need / (max_memory_gb * TP_GB), tp_fmt_gb(max_memory_gb * TP_GB, c, sizeof c));
}

tempo_memory_monitor *tempo_memory_monitor_new(double max_memory_gb) {
    tempo_memory_monitor *mm = calloc(1, sizeof *mm);
    if (!mm) return NULL;
    pthread_mutex_init(&mm->lock, NULL);
    mm->max_gb = max_memory_gb;
    mm->limit = (size_t)(max_memory_gb * TP_GB);
    tp_proc_mem pm;
    tp_memory_read_proc(&pm);
    mm->other = (size_t)pm.vm_rss; /* the runtime before anything is told to us */
    return mm;
}

void tempo_memory_monitor_free(tempo_memory_monitor *mm) {
    if (!mm) return;
    pthread_mutex_destroy(&mm->lock);
    free(mm);
}

void tp_memory_set_other(tempo_memory_monitor *mm, size_t bytes) { mm->other = bytes; }
void tp_memory_set_weights(tempo_memory_monitor *mm, size_t bytes) { mm->weights = bytes; }

/* Bytes of tempo's own machine code not in this process's resident set yet. The kernel maps code
 * in when it first runs, so the forward pass and the kernels join the resident set at the first
 * prompt, after "other" was measured: counted now, the limit holds from the first step. Found as
 * the executable mapping that holds this very function (the library, linked in or shared): its
 * size less its Rss in /proc/self/smaps (mincore would report the page cache, which other
 * processes running tempo fill, not what this process has mapped). 0 when /proc cannot be read. */
static size_t code_not_resident(void) {
    FILE *f = fopen("/proc/self/smaps", "re");
    if (!f) return 0;
    uintptr_t here = (uintptr_t)&code_not_resident;
    char line[512];
    bool in_it = false;
    size_t size = 0, rss = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &a, &b, perms) == 3 && strchr(line, '-') < strchr(line, ' ')) {
            if (in_it) break; /* the next mapping: done */
            in_it = perms[2] == 'x' && here >= a && here < b;
            if (in_it) size = b - a;
            continue;
        }
        unsigned long kb;
        if (in_it && sscanf(line, "Rss: %lu kB", &kb) == 1) rss = (size_t)kb * 1024;
    }
    fclose(f);
    return size > rss ? size - rss : 0;
}

void tp_memory_set_model(tempo_memory_monitor *mm, const tp_model *m) {
    size_t code = code_not_resident();
    pthread_mutex_lock(&mm->lock);
    mm->weights = m->weight_bytes + m->owned_bytes;
    if (m->dev) {
        const tp_device *d = m->dev;
        mm->weights = mm->weights > d->host_released ? mm->weights - d->host_released : 0;
        mm->gpu = d->gpu;
        mm->gpu_weights = d->weight_bytes;
        mm->gpu_in_rss = d->memory_in_rss;
    }
    /* The loader reads every weight page once, so the resident set now holds the
     * weights; what is left over is the runtime (with the code still to be read in), the
     * tokenizer and bookkeeping. (If some weights are not resident yet this under-counts
     * "other", and the measured resident set, which usage also looks at, covers the
     * difference.) */
    tp_proc_mem pm;
    tp_memory_read_proc(&pm);
    size_t known = mm->weights + mm->work + mm->kv + mm->records + (mm->gpu_in_rss ? mm->gpu_weights + mm->device : 0);
    mm->other = (pm.vm_rss > known ? (size_t)pm.vm_rss - known : 0) + code;
    pthread_mutex_unlock(&mm->lock);
}

static size_t accounted_locked(const tempo_memory_monitor *mm) {
    return mm->other + mm->weights + mm->kv + mm->work + mm->records + mm->gpu_weights + mm->device;
}

void tp_memory_parts(tempo_memory_monitor *mm, tp_mem_parts *out) {
    pthread_mutex_lock(&mm->lock);
    *out = (tp_mem_parts){ mm->other, mm->weights, mm->kv, mm->work, mm->records, mm->gpu_weights, mm->device };
    pthread_mutex_unlock(&mm->lock);
}

size_t tp_memory_accounted_bytes(tempo_memory_monitor *mm) {
    pthread_mutex_lock(&mm->lock);
    size_t a = accounted_locked(mm);
    pthread_mutex_unlock(&mm->lock);
    return a;
}

size_t tp_memory_limit_bytes(const tempo_memory_monitor *mm) { return mm->limit; }
double tp_memory_max_gb(const tempo_memory_monitor *mm) { return mm->max_gb; }

static size_t usage_locked(const tempo_memory_monitor *mm) {
    tp_proc_mem pm;
    tp_memory_read_proc(&pm);
    size_t acc = accounted_locked(mm), rss = pm.vm_rss ? (size_t)pm.vm_rss + rss_slack() : 0;
    return rss > acc ? rss : acc;
}

size_t tp_memory_usage_bytes(tempo_memory_monitor *mm) {
    pthread_mutex_lock(&mm->lock);
    size_t u = usage_locked(mm);
    pthread_mutex_unlock(&mm->lock);
    return u;
}

int tp_memory_try_add(tempo_memory_monitor *mm, const tp_mem_share *add, size_t ceiling, size_t *usage_out) {
    pthread_mutex_lock(&mm->lock);
    size_t use = usage_locked(mm);
    if (usage_out) *usage_out = use;
    size_t grow = add->kv + add->work + add->records + add->device;
    if (ceiling && use + grow > ceiling) {
        pthread_mutex_unlock(&mm->lock);
        return -1;
    }
    mm->kv += add->kv;
    mm->work += add->work;
    mm->records += add->records;
    mm->device += add->device;
    pthread_mutex_unlock(&mm->lock);
    return 0;
}

static size_t sub_sat(size_t a, size_t b) { return a > b ? a - b : 0; }

void tp_memory_sub(tempo_memory_monitor *mm, const tp_mem_share *sub) {
    pthread_mutex_lock(&mm->lock);
    mm->kv = sub_sat(mm->kv, sub->kv);
    mm->work = sub_sat(mm->work, sub->work);
    mm->records = sub_sat(mm->records, sub->records);
    mm->device = sub_sat(mm->device, sub->device);
    pthread_mutex_unlock(&mm->lock);
}

void tp_memory_session_count(tempo_memory_monitor *mm, int delta) {
    pthread_mutex_lock(&mm->lock);
    mm->sessions += delta;
    pthread_mutex_unlock(&mm->lock);
}

tempo_mem_level tp_memory_level(const tempo_memory_monitor *mm, size_t bytes) {
    double frac = mm->limit ? (double)bytes / (double)mm->limit : INFINITY;
    if (frac >= TP_MEM_CRITICAL_FRACTION) return TEMPO_MEM_CRITICAL;
    if (frac >= TP_MEM_WARNING_FRACTION) return TEMPO_MEM_WARNING;
    return TEMPO_MEM_OK;
}

/* ------------------------------------------------------------- public ---- */

void tempo_memory_get_stats(tempo_memory_monitor *mm, tempo_memory_stats *out) {
    tp_proc_mem pm;
    memset(out, 0, sizeof *out);
    tp_memory_read_proc(&pm);
    out->system_total_gb = (double)pm.mem_total / TP_GB;
    out->system_available_gb = (double)pm.mem_available / TP_GB;
    out->system_used_gb = pm.mem_total > pm.mem_available ? (double)(pm.mem_total - pm.mem_available) / TP_GB : 0;
    out->system_percent = pm.mem_total ? 100.0 * out->system_used_gb / out->system_total_gb : 0;
    out->process_rss_gb = (double)pm.vm_rss / TP_GB;
    out->process_peak_gb = (double)pm.vm_hwm / TP_GB;
    pthread_mutex_lock(&mm->lock);
    out->kv_gb = (double)mm->kv / TP_GB;
    out->weights_gb = (double)mm->weights / TP_GB;
    out->work_gb = (double)mm->work / TP_GB;
    out->sessions = mm->sessions;
    const struct tp_gpu *gpu = mm->gpu;
    pthread_mutex_unlock(&mm->lock);
    out->has_gpu = gpu != NULL;
    if (gpu) {
        /* the device as Vulkan reports it: allocated = tempo's device-local buffers (weights, KV
         * rows, scratch: every model and session on it), reserved = everything tempo holds through
         * Vulkan (plus the host-visible staging buffers), free = what the device has left */
        tp_gpu_mem g;
        tp_gpu_mem_get(gpu, &g);
        out->gpu_allocated_gb = (double)g.device_bytes / TP_GB;
        out->gpu_reserved_gb = (double)(g.device_bytes + g.host_bytes) / TP_GB;
        out->gpu_free_gb = (double)g.free_bytes / TP_GB;
    }
}

double tempo_memory_current_usage_gb(tempo_memory_monitor *mm) {
    return (double)tp_memory_usage_bytes(mm) / TP_GB;
}

double tempo_memory_available_gb(tempo_memory_monitor *mm) {
    tp_proc_mem pm;
    tp_memory_read_proc(&pm);
    size_t acc = tp_memory_accounted_bytes(mm), rss = pm.vm_rss ? (size_t)pm.vm_rss + rss_slack() : 0;
    size_t use = rss > acc ? rss : acc;
    double avail = mm->limit > use ? (double)(mm->limit - use) : 0.0;
    /* The limit may be larger than what the machine can still give. */
    if (pm.mem_available && (double)pm.mem_available < avail) avail = (double)pm.mem_available;
    return avail / TP_GB;
}

tempo_mem_level tempo_memory_check_limit(tempo_memory_monitor *mm, const char *operation, char *err) {
    size_t use = tp_memory_usage_bytes(mm);
    tempo_mem_level lv = tp_memory_level(mm, use);
    char u[32], l[32];
    double pct = mm->limit ? 100.0 * (double)use / (double)mm->limit : INFINITY;
    tp_fmt_gb((double)use, u, sizeof u);
    tp_fmt_gb((double)mm->limit, l, sizeof l);
    if (!operation) operation = "operation";
    if (lv == TEMPO_MEM_CRITICAL)
        tp_fail(err,
                "Memory critical during %s: %s of --max-memory-gb %s used (%.1f%%, critical level 95%%). "
                "Raise --max-memory-gb, or use a smaller or quantized model",
                operation, u, l, pct);
    else if (lv == TEMPO_MEM_WARNING)
        tp_fail(err, "Memory warning during %s: %s of --max-memory-gb %s used (%.1f%%, warning level 85%%)",
                operation, u, l, pct);
    else if (err)
        err[0] = 0;
    return lv;
}

double tempo_memory_estimate_kv_cache_gb(int batch_size, int sequence_length, int num_layers, int num_kv_heads,
                                         int head_dim, int bytes_per_elem) {
    /* K and V: one head_dim row per KV head (grouped-query attention shares
     * them between query heads), per layer, per cached token. */
    return 2.0 * batch_size * (double)sequence_length * num_layers * num_kv_heads * head_dim * bytes_per_elem /
           TP_GB;
}

double tempo_memory_estimate_parallel_batch_gb(int num_parallel_tokens, int sequence_length, int vocab_size,
                                               int hidden_size, int bytes_per_elem) {
    /* Per parallel token: its hidden state, its logits over the vocabulary and
     * its attention scores over the sequence. */
    return (double)num_parallel_tokens * ((double)hidden_size + vocab_size + sequence_length) * bytes_per_elem /
           TP_GB;
}

size_t tp_memory_kv_slot_bytes(int n_layers, int kv_dim, tp_kv_type type) {
    size_t row = 0;
    switch (type) {
    case TP_KV_F32: row = (size_t)kv_dim * 4; break;
    case TP_KV_F16: row = (size_t)kv_dim * 2; break;
    case TP_KV_Q8_0: row = (size_t)kv_dim / 32 * 34; break; /* blocks of 32: f16 scale + 32 int8 */
    }
    return 2 * (size_t)n_layers * row;
}

size_t tp_memory_token_work_bytes(int dim, int n_vocab, int ctx) {
    return 4 * ((size_t)dim + (size_t)n_vocab + (size_t)ctx);
}

int tp_memory_max_parallel_for(double available_bytes, int steps, size_t slot_bytes, size_t token_work,
                               size_t *per_token_out) {
    size_t per = (size_t)(steps > 0 ? steps : 1) * slot_bytes + token_work;
    if (per_token_out) *per_token_out = per;
    double usable = available_bytes * (1.0 - TP_MEM_AUTO_RESERVE);
    double w = per ? floor(usable / (double)per) : TP_MEM_AUTO_MAX_PARALLEL;
    if (!(w >= 1)) return 1;
    if (w > TP_MEM_AUTO_MAX_PARALLEL) return TP_MEM_AUTO_MAX_PARALLEL;
    return (int)w;
}

int tempo_memory_calculate_max_parallel_tokens(tempo_memory_monitor *mm, const tempo_model *tm,
                                               int sequence_length) {
    const tp_hparams *hp = &tm->hp;
    size_t slot = tp_memory_kv_slot_bytes(hp->n_layers, hp->n_kv_heads * hp->head_dim, TP_KV_F32);
    size_t work = tp_memory_token_work_bytes(hp->dim, hp->n_vocab, hp->n_ctx);
    double avail = tempo_memory_available_gb(mm) * TP_GB;
    return tp_memory_max_parallel_for(avail, sequence_length, slot, work, NULL);
}

size_t tp_memory_predict_run_bytes(const tp_model *m, size_t other_bytes, int prompt_tokens, int steps, int width,
                                   tp_kv_type type, int max_slots) {
    const tp_hparams *hp = &m->hp;
    size_t slot = tp_memory_kv_slot_bytes(hp->n_layers, hp->n_kv_heads * hp->head_dim, type);
    long long slots = (long long)prompt_tokens + (long long)steps * width;
    if (max_slots > 0 && slots > max_slots) slots = max_slots;
    size_t fed = slots > prompt_tokens ? (size_t)(slots - prompt_tokens) : 0; /* tokens fed after the prompt */
    return other_bytes + m->weight_bytes + m->owned_bytes +
           tp_compute_estimate_bytes(m, m->n_threads, TP_MATMUL_MAX_BATCH, (int)slots) + (size_t)slots * slot +
           fed * TP_MEM_MEMBER_OVERHEAD + (size_t)width * tp_memory_token_work_bytes(hp->dim, hp->n_vocab, (int)slots);
}

void tempo_memory_free_memory(tempo_memory_monitor *mm) {
    (void)mm;
    /* Give freed heap pages back to the system (the C counterpart of the
     * prototype's gc.collect()). */
    malloc_trim(0);
}

void tempo_memory_log_line(tempo_memory_monitor *mm, const char *label, char *buf, size_t cap) {
    tempo_memory_stats s;
    tempo_memory_get_stats(mm, &s);
    int n = snprintf(buf, cap, "%s%sMemory: System %.2f/%.2fGB (%.1f%%) Process %.2fGB (peak %.2fGB) KV %.2fGB",
                     label && *label ? label : "", label && *label ? ": " : "", s.system_used_gb, s.system_total_gb,
                     s.system_percent, s.process_rss_gb, s.process_peak_gb, s.kv_gb);
    if (s.has_gpu && n > 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, " GPU %.2fGB allocated, %.2fGB reserved, %.2fGB free", s.gpu_allocated_gb,
                 s.gpu_reserved_gb, s.gpu_free_gb);
}

char *tempo_memory_get_config(tempo_memory_monitor *mm) {
    tempo_memory_stats s;
    tempo_memory_get_stats(mm, &s);
    bool bad = false;
    cJSON *o = tp_jb_must(cJSON_CreateObject(), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "max_memory_gb", mm->max_gb), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "current_usage_gb", tempo_memory_current_usage_gb(mm)), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "available_gb", tempo_memory_available_gb(mm)), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "accounted_gb", (double)tp_memory_accounted_bytes(mm) / TP_GB), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "weights_gb", s.weights_gb), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "kv_gb", s.kv_gb), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "work_gb", s.work_gb), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "other_gb", (double)mm->other / TP_GB), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "sessions", s.sessions), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "process_rss_gb", s.process_rss_gb), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "process_peak_gb", s.process_peak_gb), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "system_total_gb", s.system_total_gb), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "system_available_gb", s.system_available_gb), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "warning_threshold", TP_MEM_WARNING_FRACTION), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "critical_threshold", TP_MEM_CRITICAL_FRACTION), &bad);
    tp_jb_must(cJSON_AddNumberToObject(o, "auto_reserve", TP_MEM_AUTO_RESERVE), &bad);
    tp_jb_must(cJSON_AddBoolToObject(o, "has_gpu", s.has_gpu), &bad);
    if (s.has_gpu) {
        tp_mem_parts p;
        tp_memory_parts(mm, &p);
        tp_jb_must(cJSON_AddNumberToObject(o, "gpu_allocated_gb", s.gpu_allocated_gb), &bad);
        tp_jb_must(cJSON_AddNumberToObject(o, "gpu_reserved_gb", s.gpu_reserved_gb), &bad);
        tp_jb_must(cJSON_AddNumberToObject(o, "gpu_free_gb", s.gpu_free_gb), &bad);
        tp_jb_must(cJSON_AddNumberToObject(o, "gpu_weights_gb", (double)p.gpu_weights / TP_GB), &bad);
        tp_jb_must(cJSON_AddNumberToObject(o, "gpu_sessions_gb", (double)p.device / TP_GB), &bad);
    }
    char *txt = bad ? NULL : cJSON_Print(o);
    cJSON_Delete(o);
    return txt;
}

