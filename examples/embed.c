/* embed.c: tempo in a program. Usage: example_embed MODEL.gguf [PROMPT] */
#include <stdio.h>
#include "tempo.h"

static int on_step(tempo_event ev, const tempo_step *s, void *user) {
    if (ev != TEMPO_EVENT_STEP) return 0;   /* TEMPO_EVENT_PRUNE: members of an earlier set were pruned */
    for (int j = 0; j < s->n_tokens; j++)   /* every member of the set, as soon as it exists */
        printf("%s%s", s->n_tokens == 1 ? "" : j ? "|" : "{", s->tokens[j].text);
    printf("%s", s->n_tokens > 1 ? "}" : "");
    return fflush(stdout), 0;
}

int main(int argc, char **argv) {
    char err[TEMPO_ERR_LEN];
    tempo_config cfg;
    tempo_config_init(&cfg);
    if (argc < 2 || tempo_config_set(&cfg, "max_tokens", "24", err) ||
        (argc > 2 && tempo_config_set(&cfg, "prompt", argv[2], err)))
        return fprintf(stderr, "usage: example_embed MODEL.gguf [PROMPT]\n"), tempo_config_free(&cfg), 2;
    tempo_model *m = tempo_model_open(argv[1], &cfg, err);
    printf("%s", m ? cfg.prompt : "");
    tempo_result *r = m ? tempo_generate(m, &cfg, on_step, NULL, err) : NULL;
    if (!r) return fprintf(stderr, "example_embed: %s\n", err), tempo_model_close(m), tempo_config_free(&cfg), 1;
    printf("\nclean: %s\n%d steps, %d parallel, stop: %s\n", r->clean_text, r->n_steps, r->parallel_steps,
           tempo_stop_reason_name(r->stop_reason));
    tempo_result_free(r), tempo_model_close(m), tempo_config_free(&cfg);
    return 0;
}
