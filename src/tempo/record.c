/* record.c: the run's record and its snapshots (see record.h). */
#include "tempo/record.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "memory/memory.h"
#include "output/text.h"

#define CHUNK_BYTES 16384

typedef struct tp_text_chunk {
    struct tp_text_chunk *next;
    size_t used, cap;
    char data[];
} text_chunk;

int tp_record_init(tp_record *r, int max_steps, int max_tokens, char *err) {
    memset(r, 0, sizeof *r);
    r->max_steps = max_steps;
    r->max_tokens = max_tokens;
    r->steps = calloc((size_t)(max_steps > 0 ? max_steps : 1), sizeof *r->steps);
    r->tokens = calloc((size_t)(max_tokens > 0 ? max_tokens : 1), sizeof *r->tokens);
    if (!r->steps || !r->tokens) {
        tp_record_free(r);
        return tp_fail(err, "out of memory allocating the record of %d steps", max_steps);
    }
    return 0;
}

int tp_record_init_mcts(tp_record *r, int max_candidates, char *err) {
    r->mcts = calloc((size_t)(max_candidates > 0 ? max_candidates : 1), sizeof *r->mcts);
    if (!r->mcts) return tp_fail(err, "out of memory allocating the record of the MCTS searches");
    r->max_mcts = max_candidates;
    return 0;
}

void tp_record_free(tp_record *r) {
    free(r->steps);
    free(r->tokens);
    free(r->mcts);
    for (text_chunk *c = r->texts, *next; c; c = next) { next = c->next; free(c); }
    memset(r, 0, sizeof *r);
}

char *tp_record_text(tp_record *r, const char *s, size_t n) {
    text_chunk *c = r->texts;
    if (!c || c->used + n + 1 > c->cap) {
        size_t cap = n + 1 > CHUNK_BYTES ? n + 1 : CHUNK_BYTES;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = r->texts;
        c->used = 0;
        c->cap = cap;
        r->texts = c;
    }
    char *d = c->data + c->used;
    memcpy(d, s, n);
    d[n] = 0;
    c->used += n + 1;
    return d;
}

/* ---------------------------------------------------------------- snapshots -- */

/* The public result plus what it owns in bulk. */
typedef struct {
    tempo_result pub; /* first, so a tempo_result * is a result_priv * */
    tempo_token *tokens;
    tempo_mcts_candidate *mcts;
    char *texts;
} result_priv;

void tempo_result_free(tempo_result *r) {
    if (!r) return;
    result_priv *rp = (result_priv *)r;
    free(r->prompt);
    free(r->generated_text);
    free(r->clean_text);
    free(r->steps);
    free(r->stop_message);
    for (int i = 0; i < r->n_adjustments; i++) free(r->adjustments[i].reason);
    free(r->adjustments);
    free(rp->tokens);
    free(rp->mcts);
    free(rp->texts);
    free(r->kv_offload);
    free(r->device);
    free(r->memory.layers);
    free(rp);
}

static char *dup_or_null(const char *s, bool *oom) {
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *oom = true;
    return d;
}

tempo_result *tp_record_snapshot(const tp_record *rec, const tp_record_meta *meta) {
    result_priv *rp = calloc(1, sizeof *rp);
    if (!rp) return NULL;
    tempo_result *r = &rp->pub;
    bool oom = false;
    size_t n_tok = 0, n_mcts = 0, text_bytes = 0;
    for (int k = 0; k < rec->n_steps; k++) {
        const tempo_step *st = &rec->steps[k];
        n_tok += (size_t)st->n_tokens;
        n_mcts += (size_t)st->n_mcts;
        for (int j = 0; j < st->n_tokens; j++) text_bytes += strlen(st->tokens[j].text ? st->tokens[j].text : "") + 1;
        for (int j = 0; j < st->n_mcts; j++) text_bytes += strlen(st->mcts[j].text ? st->mcts[j].text : "") + 1;
    }
    r->n_steps = rec->n_steps;
    if (rec->n_steps > 0) {
        r->steps = malloc((size_t)(unsigned)rec->n_steps * sizeof *r->steps);
        rp->tokens = malloc((n_tok ? n_tok : 1) * sizeof *rp->tokens);
        rp->mcts = n_mcts ? malloc(n_mcts * sizeof *rp->mcts) : NULL;
        rp->texts = malloc(text_bytes ? text_bytes : 1);
        oom |= !r->steps || !rp->tokens || !rp->texts || (n_mcts && !rp->mcts);
    }
    if (!oom && rec->n_steps) {
        tempo_token *t = rp->tokens;
        tempo_mcts_candidate *mc = rp->mcts;
        char *txt = rp->texts;
        for (int k = 0; k < rec->n_steps; k++) {
            r->steps[k] = rec->steps[k];
            r->steps[k].tokens = t;
            for (int j = 0; j < rec->steps[k].n_tokens; j++) {
                *t = rec->steps[k].tokens[j];
                const char *s = t->text ? t->text : "";
                size_t n = strlen(s) + 1;
                memcpy(txt, s, n);
                t->text = txt;
                txt += n;
                t++;
            }
            r->steps[k].mcts = rec->steps[k].n_mcts ? mc : NULL;
            for (int j = 0; j < rec->steps[k].n_mcts; j++) {
                *mc = rec->steps[k].mcts[j];
                const char *s = mc->text ? mc->text : "";
                size_t n = strlen(s) + 1;
                memcpy(txt, s, n);
                mc->text = txt;
                txt += n;
                mc++;
            }
        }
    }
    r->prompt = dup_or_null(meta->prompt ? meta->prompt : "", &oom);
    r->stop_reason = meta->stop_reason;
    r->stop_message = dup_or_null(meta->stop_message && *meta->stop_message ? meta->stop_message : NULL, &oom);
    if (meta->n_adjustments > 0) {
        r->adjustments = calloc((size_t)meta->n_adjustments, sizeof *r->adjustments);
        if (!r->adjustments) oom = true;
        else {
            r->n_adjustments = meta->n_adjustments;
            for (int i = 0; i < meta->n_adjustments; i++) {
                r->adjustments[i] = meta->adjustments[i];
                r->adjustments[i].reason = dup_or_null(meta->adjustments[i].reason, &oom);
            }
        }
    }
    r->generation_time_s = meta->generation_time_s;
    for (int k = 0; k < r->n_steps && !oom; k++) r->parallel_steps += r->steps[k].n_tokens > 1;
    r->total_slots = meta->total_slots;
    r->n_prompt_tokens = meta->n_prompt_tokens;
    r->max_parallel_tokens = meta->max_parallel_tokens;
    if (meta->params) r->params = *meta->params;
    r->threads = meta->threads;
    r->max_memory_gb = meta->max_memory_gb;
    r->kv_cache_type = meta->kv_cache_type;
    r->kv_offload = dup_or_null(meta->kv_offload && *meta->kv_offload ? meta->kv_offload : NULL, &oom);
    r->device = dup_or_null(meta->device ? meta->device : "cpu", &oom);
    r->gpu_layers = meta->gpu_layers;
    r->gpu_allocated_bytes = meta->gpu_allocated_bytes;
    r->gpu_reserved_bytes = meta->gpu_reserved_bytes;
    r->gpu_free_bytes = meta->gpu_free_bytes;
    if (meta->memory) {
        r->memory = *meta->memory;
        r->memory.layers = NULL;
        r->memory.n_layers = 0;
        if (meta->memory->n_layers > 0 && meta->memory->layers) {
            r->memory.layers = malloc((size_t)meta->memory->n_layers * sizeof *r->memory.layers);
            if (!r->memory.layers) oom = true;
            else {
                memcpy(r->memory.layers, meta->memory->layers, (size_t)meta->memory->n_layers * sizeof *r->memory.layers);
                r->memory.n_layers = meta->memory->n_layers;
            }
        }
    }
    tp_proc_mem pm;
    if (tp_memory_read_proc(&pm) == 0) r->peak_memory_bytes = (size_t)pm.vm_hwm;
    if (!oom) {
        r->generated_text = tp_text_generated(r->prompt, r->steps, r->n_steps, false);
        r->clean_text = tp_text_clean(r->prompt, r->steps, r->n_steps);
        oom = !r->generated_text || !r->clean_text;
    }
    if (oom) {
        if (!r->steps || !rp->tokens || !rp->texts) r->n_steps = 0;
        tempo_result_free(r);
        return NULL;
    }
    return r;
}
