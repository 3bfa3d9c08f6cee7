/* model_api.c: the model half of the public API: open (the memory check, reading the weights
 * in with progress), close, info, tokenizer access, and a tokenizer without a model. */
#include "api/api.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat/chat.h"
#include "core/common.h"
#include "core/log.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "gpu/gpu.h"
#include "memory/memory.h"
#include "gpu/backend.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

/* ------------------------------------------------------------------ errors -- */

int tp_set_error(tempo_error *err, tempo_status code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void tp_ok(tempo_error *err) {
    if (!err) return;
    err->code = TEMPO_OK;
    err->message[0] = 0;
}

const char *tempo_status_name(tempo_status s) {
    switch (s) {
    case TEMPO_OK: return "ok";
    case TEMPO_ERR_ARG: return "invalid argument";
    case TEMPO_ERR_IO: return "io";
    case TEMPO_ERR_FORMAT: return "bad file format";
    case TEMPO_ERR_NOMEM: return "out of memory";
    case TEMPO_ERR_MEMORY_LIMIT: return "memory limit";
    case TEMPO_ERR_CACHE_LIMIT: return "cache limit";
    case TEMPO_ERR_STATE: return "invalid state";
    case TEMPO_ERR_NUMERIC: return "non-finite numbers";
    case TEMPO_ERR_INTERNAL: return "internal error";
    }
    return "unknown";
}

const char *tempo_version(void) { return TEMPO_VERSION; }

/* The status of a load error, from its message (the loaders report text only). */
static tempo_status load_status(const char *msg) {
    if (strstr(msg, "out of memory")) return TEMPO_ERR_NOMEM;
    if (strstr(msg, "cannot open") || strstr(msg, "cannot read") || strstr(msg, "No such file") ||
        strstr(msg, "no model given"))
        return TEMPO_ERR_IO;
    return TEMPO_ERR_FORMAT;
}

/* ------------------------------------------------------------------- model -- */

/* Read every page of the mapped weights once, so the first token does not pay for page faults,
 * telling the caller how far it got. */
static void prefault(const uint8_t *p, size_t n, size_t *done, size_t total, const tempo_model_params *mp) {
    const size_t page = 4096, step = total / 100 + 1;
    volatile uint8_t sink = 0;
    size_t next = *done;
    for (size_t off = 0; off < n; off += page) {
        sink ^= p[off];
        if (mp->progress && *done + off >= next) {
            mp->progress((double)(*done + off) / (double)total, mp->progress_user);
            next += step;
        }
    }
    *done += n;
    (void)sink;
}

tempo_model *tempo_model_open(const char *path, const tempo_model_params *mp, tempo_error *err) {
    char msg[TEMPO_ERR_LEN] = "";
    tempo_model_params defaults;
    if (!mp) { tempo_model_params_init(&defaults); mp = &defaults; }
    if (!(mp->max_memory_gb > 0) || mp->threads < 0 || mp->kv_cache_type < TEMPO_KV_F32 || mp->kv_cache_type > TEMPO_KV_Q8_0) {
        tp_set_error(err, TEMPO_ERR_ARG, "bad model parameters (max_memory_gb %g, threads %d, kv_cache_type %d)",
                     mp->max_memory_gb, mp->threads, (int)mp->kv_cache_type);
        return NULL;
    }
    if (mp->kv_offload && *mp->kv_offload) { /* a bad folder is a usage error, found before the weights are read */
        struct stat st;
        errno = 0;
        if (stat(mp->kv_offload, &st) != 0 || !S_ISDIR(st.st_mode) || access(mp->kv_offload, W_OK | X_OK) != 0) {
            tp_set_error(err, TEMPO_ERR_ARG, "--kv-offload: '%s' is not a writable folder (%s)", mp->kv_offload,
                         errno ? strerror(errno) : "not a directory");
            return NULL;
        }
    }
    /* The device: a malformed value, or a GPU asked for with what only the CPU does (--kv-offload
     * keeps the cache in files on the host; the Vulkan backend stores f32 and f16 rows), is a usage
     * error found before the weights are read; "auto" settles on the CPU for those. */
    if (mp->device && *mp->device && !tp_gpu_spec_valid(mp->device)) {
        tp_set_error(err, TEMPO_ERR_ARG, "--device: '%s' is not one of auto, cpu, gpu, gpu:N", mp->device);
        return NULL;
    }
    bool offload = mp->kv_offload && *mp->kv_offload, q8 = mp->kv_cache_type == TEMPO_KV_Q8_0;
    bool asks_gpu = mp->device && !strncmp(mp->device, "gpu", 3) && mp->gpu_layers != 0;
    if (asks_gpu && (offload || q8)) {
        tp_set_error(err, TEMPO_ERR_ARG, "--device %s: %s", mp->device,
                     offload ? "--kv-offload keeps the KV cache in files on the host, which only the CPU reads: use "
                               "--device cpu, or leave --kv-offload out"
                             : "the Vulkan backend stores the KV cache in f32 or f16, not q8_0: use --kv-cache-type f16 "
                               "or f32, or --device cpu");
        return NULL;
    }
    int64_t bytes = tp_model_file_bytes(path ? path : "", msg);
    if (bytes < 0) { tp_set_error(err, TEMPO_ERR_IO, "%s", msg); return NULL; }
    if (tp_memory_check_model_fits(mp->max_memory_gb, bytes, msg) ||
        tp_memory_check_load_room(mp->max_memory_gb, (size_t)bytes, "the total", msg)) {
        tp_set_error(err, TEMPO_ERR_MEMORY_LIMIT, "%s", msg);
        return NULL;
    }
    tp_load_opts opts = { .max_bytes = (size_t)(mp->max_memory_gb * TP_GB) /* the loader charges against it */ };
    tp_model *m = tp_model_load(path, &opts, msg);
    if (!m) { tp_set_error(err, load_status(msg), "%s", msg); return NULL; }
    size_t done = 0, total = 0;
    if (m->gguf) total += m->gguf->map_size;
    if (m->hf)
        for (int i = 0; i < ((const st_set *)m->hf)->n_files; i++) total += ((const st_set *)m->hf)->files[i]->map_size;
    /* The tokenizer and the tables are in; the weights' pages are not read yet. */
    if (tp_memory_check_load_room(mp->max_memory_gb, total, "the total", msg)) {
        tp_model_free(m);
        tp_set_error(err, TEMPO_ERR_MEMORY_LIMIT, "%s", msg);
        return NULL;
    }
    /* The GPU backend (gpu/backend.h): the device, and the weights uploaded to it; the file's
     * pages of uploaded tensors are given back as they go, so they are not read in first. */
    tp_device_opts dopts = { .device = mp->device, .gpu_layers = mp->gpu_layers, .adapt = mp->gpu_adapt,
                             .auto_cpu = offload || q8, .kv_type = (tp_kv_type)mp->kv_cache_type,
                             .max_bytes = (size_t)(TP_MEM_CRITICAL_FRACTION * mp->max_memory_gb * TP_GB) };
    if (tp_device_open(m, &dopts, &m->dev, msg)) {
        tp_model_free(m);
        tempo_status code = strstr(msg, "out of memory") ? TEMPO_ERR_NOMEM
                            : strstr(msg, " free") || strstr(msg, "--max-memory-gb") ? TEMPO_ERR_MEMORY_LIMIT
                                                                                     : TEMPO_ERR_ARG;
        tp_set_error(err, code, "%s", msg);
        return NULL;
    }
    /* the host's weights into the CPU kernels' layouts (kernels/matmul.h) */
    tp_model_place_weights(m, m->dev ? m->dev->layers : 0, m->dev && m->dev->head);
    if (!m->dev && m->gguf) prefault(m->gguf->map, m->gguf->map_size, &done, total, mp);
    if (!m->dev && m->hf) {
        const st_set *st = m->hf;
        for (int i = 0; i < st->n_files; i++) prefault(st->files[i]->map, st->files[i]->map_size, &done, total, mp);
    }
    if (mp->progress) mp->progress(1.0, mp->progress_user);
    m->params = *mp;
    m->params.progress = NULL; /* called during the open only */
    m->params.progress_user = NULL;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    m->n_threads = mp->threads > 0 ? mp->threads : cores > 0 ? (int)cores : 1;
    m->path = strdup(path);
    m->mon = tempo_memory_monitor_new(mp->max_memory_gb);
    m->params.kv_offload = mp->kv_offload && *mp->kv_offload ? strdup(mp->kv_offload) : NULL; /* the model's copy */
    m->params.device = mp->device && *mp->device ? strdup(mp->device) : NULL;
    if (!m->path || !m->mon || (mp->kv_offload && *mp->kv_offload && !m->params.kv_offload) ||
        (mp->device && *mp->device && !m->params.device)) {
        tempo_memory_monitor_free(m->mon);
        free((char *)m->params.kv_offload);
        free((char *)m->params.device);
        tp_device_free(m->dev);
        tp_model_free(m);
        tp_set_error(err, TEMPO_ERR_NOMEM, "out of memory opening %s", path);
        return NULL;
    }
    tp_memory_set_model(m->mon, m);
    /* check_memory_limit("model loading"): a model that leaves no room to generate is refused
     * now, with the spec's message; at the warning level the caller is told through the log. */
    tempo_mem_level lv = tempo_memory_check_limit(m->mon, "model loading", msg);
    if (lv == TEMPO_MEM_CRITICAL) {
        tempo_model_close(m);
        tp_set_error(err, TEMPO_ERR_MEMORY_LIMIT, "%s", msg);
        return NULL;
    }
    if (lv == TEMPO_MEM_WARNING) tp_log(TEMPO_LOG_WARN, "Warning: %s", msg);
    tp_ok(err);
    return m;
}

void tempo_model_close(tempo_model *m) {
    if (!m) return;
    tempo_memory_monitor_free(m->mon);
    free((char *)m->params.kv_offload);
    free((char *)m->params.device);
    tp_device_free(m->dev);
    tp_model_free(m);
}

tempo_memory_monitor *tempo_model_memory(tempo_model *m) { return m ? m->mon : NULL; }

void tempo_model_get_info(const tempo_model *m, tempo_model_info *info) {
    const tp_hparams *hp = &m->hp;
    memset(info, 0, sizeof *info);
    info->n_vocab = hp->n_vocab;
    info->dim = hp->dim;
    info->n_layers = hp->n_layers;
    info->n_heads = hp->n_heads;
    info->n_kv_heads = hp->n_kv_heads;
    info->head_dim = hp->head_dim;
    info->ffn_dim = hp->ffn_dim;
    info->n_ctx = hp->n_ctx;
    info->arch = m->arch;
    info->tokenizer = m->tok && tp_tokenizer_kind(m->tok) == TOK_SPM ? "llama" : "gpt2";
    info->weight_bytes = m->weight_bytes;
    info->path = m->path;
    info->threads = m->n_threads;
    info->max_memory_gb = m->params.max_memory_gb;
    info->kv_cache_type = m->params.kv_cache_type;
    info->kv_offload = m->params.kv_offload;
    info->device = m->dev ? m->dev->name : "cpu";
    info->gpu_layers = m->dev ? m->dev->layers : 0;
    info->gpu_weight_bytes = m->dev ? m->dev->weight_bytes : 0;
}

int tempo_tokenize(const tempo_model *m, const char *text, bool add_bos, int32_t *out, int cap) {
    if (!m || !m->tok || !text) return -1;
    int n = tp_tokenizer_encode(m->tok, text, add_bos, true, out, cap);
    return n < 0 ? -1 : n; /* the documented failure, out of memory (TP_TOK_NOMEM) included */
}

char *tempo_token_text(const tempo_model *m, int32_t id) {
    if (!m || !m->tok || id < 0 || id >= tp_tokenizer_vocab_size(m->tok)) return NULL;
    char buf[256];
    int n = tp_tokenizer_piece(m->tok, id, true, buf, sizeof buf);
    if (n < -1) {
        char *big = malloc((size_t)-n + 1);
        if (!big) return NULL;
        n = tp_tokenizer_piece(m->tok, id, true, big, -n + 1);
        big[n < 0 ? 0 : n] = 0;
        return big;
    }
    if (n < 0) n = 0;
    buf[n] = 0;
    return strdup(buf);
}

char *tempo_detokenize(const tempo_model *m, const int32_t *ids, int n) {
    if (!m || !m->tok || n < 0 || (n > 0 && !ids)) return NULL;
    int V = tp_tokenizer_vocab_size(m->tok);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) return NULL;
    return tp_tokenizer_decode_special(m->tok, ids, n, true);
}

/* ------------------------------------------------------------ vocab alone -- */

struct tempo_vocab {
    tp_tokenizer *tok;
    gguf_file *gguf;
};

tempo_vocab *tempo_vocab_open(const char *path, tempo_error *err) {
    char msg[TEMPO_ERR_LEN] = "";
    struct stat st;
    if (!path || !*path) { tp_set_error(err, TEMPO_ERR_ARG, "no model given (use --model PATH)"); return NULL; }
    if (stat(path, &st) != 0) { tp_set_error(err, TEMPO_ERR_IO, "%s: cannot open: %s", path, strerror(errno)); return NULL; }
    tempo_vocab *v = calloc(1, sizeof *v);
    if (!v) { tp_set_error(err, TEMPO_ERR_NOMEM, "out of memory"); return NULL; }
    if (S_ISDIR(st.st_mode)) {
        v->tok = tp_tokenizer_from_hf(path, msg);
    } else {
        v->gguf = tp_gguf_open(path, msg);
        if (v->gguf) v->tok = tp_tokenizer_from_gguf(v->gguf, msg);
    }
    if (!v->tok) {
        tp_set_error(err, load_status(msg), "%s", msg);
        tempo_vocab_close(v);
        return NULL;
    }
    tp_ok(err);
    return v;
}

void tempo_vocab_close(tempo_vocab *v) {
    if (!v) return;
    if (v->tok) tp_tokenizer_free(v->tok);
    if (v->gguf) tp_gguf_close(v->gguf);
    free(v);
}

int tempo_vocab_tokenize(const tempo_vocab *v, const char *text, bool add_bos, int32_t *out, int cap) {
    if (!v || !text) return -1;
    int n = tp_tokenizer_encode(v->tok, text, add_bos, true, out, cap);
    return n < 0 ? -1 : n; /* as tempo_tokenize */
}

/* -------------------------------------------------------------------- chat -- */

char *tempo_chat_apply(const tempo_model *m, const char *template_name, const tempo_chat_message *msgs, size_t n,
                       bool add_generation_prompt, tempo_error *err) {
    char msg[TEMPO_ERR_LEN] = "";
    if (!m || !m->tok) { tp_set_error(err, TEMPO_ERR_ARG, "no model"); return NULL; }
    if (n == 0 || !msgs) { tp_set_error(err, TEMPO_ERR_ARG, "the conversation has no messages"); return NULL; }
    _Static_assert(sizeof(tempo_chat_message) == sizeof(tp_chat_msg), "one message layout");
    char *text = tp_chat_apply(m->tok, template_name && *template_name ? template_name : NULL,
                               (const tp_chat_msg *)msgs, n, add_generation_prompt, msg);
    if (!text) tp_set_error(err, strstr(msg, "out of memory") ? TEMPO_ERR_NOMEM : TEMPO_ERR_ARG, "%s", msg);
    else tp_ok(err);
    return text;
}

size_t tempo_chat_formats(char *buf, size_t cap) { return tp_chat_format_names(buf, cap); }

const char *tempo_chat_format_of(const tempo_model *m, const char *template_name, tempo_error *err) {
    char msg[TEMPO_ERR_LEN] = "";
    if (!m || !m->tok) { tp_set_error(err, TEMPO_ERR_ARG, "no model"); return NULL; }
    const tp_chat_format *f = tp_chat_format_for(m->tok, template_name && *template_name ? template_name : NULL, msg);
    if (!f) { tp_set_error(err, TEMPO_ERR_ARG, "%s", msg); return NULL; }
    tp_ok(err);
    return tp_chat_format_name(f);
}
