/* embed.c: tempo inside a program. Usage: example_embed MODEL.gguf [PROMPT] */
#include <stdio.h>
#include "tempo.h"

/* Called with every set as soon as it exists: print "{a|b|c}" or the single token. */
static int on_step(tempo_event ev, const tempo_step *s, void *user) {
    if (ev != TEMPO_EVENT_STEP) return 0; /* TEMPO_EVENT_PRUNE: an earlier set lost members */
    for (int j = 0; j < s->n_tokens; j++)
        printf("%s%s", s->n_tokens == 1 ? "" : j ? "|" : "{", s->tokens[j].text);
    printf("%s", s->n_tokens > 1 ? "}" : "");
    fflush(stdout);
    return 0; /* non-zero would stop the run */
}

int main(int argc, char **argv) {
    char err[TEMPO_ERR_LEN];
    tempo_config cfg;
    tempo_config_init(&cfg);
    tempo_config_set(&cfg, "max_tokens", "24", err);
    if (argc > 2) tempo_config_set(&cfg, "prompt", argv[2], err);
    tempo_model *m = argc > 1 ? tempo_model_open(argv[1], &cfg, err) : NULL;
    tempo_result *r = m ? (printf("%s", cfg.prompt), tempo_generate(m, &cfg, on_step, NULL, err)) : NULL;
    if (r) printf("\nclean: %s\n%d steps, %d parallel, stop: %s\n", r->clean_text, r->n_steps,
                  r->parallel_steps, tempo_stop_reason_name(r->stop_reason));
    else fprintf(stderr, "example_embed: %s\n", argc > 1 ? err : "usage: example_embed MODEL.gguf [PROMPT]");
    int status = r ? 0 : 1;
    tempo_result_free(r);
    tempo_model_close(m);
    tempo_config_free(&cfg);
    return status;
}
