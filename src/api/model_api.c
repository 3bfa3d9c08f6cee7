/* model_api.c: the model half of the public API: open (with the memory check
 * and the load progress bar), close, info, tokenizer access. */
#include "api/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "memory/memory.h"
#include "tokenizer/tokenizer.h"

#define PROGRESS_MIN_BYTES (100u * 1024 * 1024)

/* Read every page of the mapped weights once, so the first token does not pay
 * for page faults, drawing a progress bar on a terminal while doing it. */
static void prefault(const uint8_t *p, size_t n, bool bar) {
    const size_t page = 4096, step = n / 100 + 1;
    volatile uint8_t sink = 0;
    size_t next = 0;
    for (size_t off = 0; off < n; off += page) {
        sink ^= p[off];
        if (bar && off >= next) {
            int pct = (int)(100.0 * (double)off / (double)n);
            fprintf(stderr, "\rloading [%-40.*s] %3d%%", pct * 40 / 100,
                    "########################################", pct);
            next += step;
        }
    }
    if (bar) fprintf(stderr, "\rloading [########################################] 100%%\n");
    (void)sink;
}

tempo_model *tempo_model_open(const char *path, const tempo_config *cfg, char *err) {
    tempo_config defaults;
    if (!cfg) { tempo_config_init(&defaults); cfg = &defaults; }
    tempo_model *tm = NULL;
    int64_t bytes = tp_model_file_bytes(path ? path : "", err);
    if (bytes < 0) goto out;
    if (tp_memory_check_model_fits(cfg->max_memory_gb, bytes, err)) goto out;

    tp_load_opts opts = { .n_threads = cfg->threads, .max_batch = 0, .max_ctx = 0,
                          .max_bytes = (size_t)(cfg->max_memory_gb * TP_GB) /* the loader charges against it */ };
    tp_model *m = tp_model_load(path, &opts, err);
    if (!m) goto out;
    bool bar = (size_t)bytes > PROGRESS_MIN_BYTES && isatty(STDERR_FILENO) && isatty(STDOUT_FILENO);
    if (m->gguf) prefault(m->gguf->map, m->gguf->map_size, bar);
    if (m->hf) {
        const st_set *st = m->hf;
        for (int i = 0; i < st->n_files; i++) prefault(st->files[i]->map, st->files[i]->map_size, bar);
    }
    tm = tp_xcalloc(1, sizeof *tm);
    tm->m = m;
    tm->path = tp_xstrdup(path);
    tm->mon = tempo_memory_monitor_new(cfg->max_memory_gb);
    tp_memory_set_weights(tm->mon, m->weight_bytes + m->owned_bytes);
    tp_memory_set_work(tm->mon, tp_forward_work_bytes(m));
out:
    if (cfg == &defaults) tempo_config_free(&defaults);
    return tm;
}

void tempo_model_close(tempo_model *tm) {
    if (!tm) return;
    tp_model_free(tm->m);
    tempo_memory_monitor_free(tm->mon);
    free(tm->path);
    free(tm);
}

void tempo_model_get_info(const tempo_model *tm, tempo_model_info *info) {
    const tp_hparams *hp = &tm->m->hp;
    info->n_vocab = hp->n_vocab;
    info->dim = hp->dim;
    info->n_layers = hp->n_layers;
    info->n_heads = hp->n_heads;
    info->n_kv_heads = hp->n_kv_heads;
    info->head_dim = hp->head_dim;
    info->ffn_dim = hp->ffn_dim;
    info->n_ctx = hp->n_ctx;
    info->arch = tm->m->arch;
    info->tokenizer = tp_tokenizer_kind(tm->m->tok) == TOK_SPM ? "llama" : "gpt2";
    info->weight_bytes = tm->m->weight_bytes;
}

int tempo_tokenize(const tempo_model *tm, const char *text, bool add_bos, int32_t *out, int cap) {
    return tp_tokenizer_encode(tm->m->tok, text, add_bos, true, out, cap);
}

char *tempo_token_text(const tempo_model *tm, int32_t id) {
    char buf[256];
    int n = tp_tokenizer_piece(tm->m->tok, id, true, buf, sizeof buf);
    if (n < 0) {
        char *big = tp_xmalloc((size_t)-n + 1);
        n = tp_tokenizer_piece(tm->m->tok, id, true, big, -n + 1);
        big[n < 0 ? 0 : n] = 0;
        return big;
    }
    buf[n] = 0;
    return tp_xstrdup(buf);
}
