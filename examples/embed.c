/* embed.c: tempo inside a program. Usage: example_embed MODEL.gguf [PROMPT] */
#include <stdio.h>
#include "tempo.h"

/* Called with every set as soon as it exists: print "{a|b|c}" or the single token. */
static int on_step(tempo_event ev, const tempo_step *s, void *user) {
    (void)user;
    if (ev != TEMPO_EVENT_STEP) return 0; /* TEMPO_EVENT_PRUNE: an earlier set lost members */
    for (int j = 0; j < s->n_tokens; j++)
        printf("%s%s", s->n_tokens == 1 ? "" : j ? "|" : "{", s->tokens[j].text);
    printf("%s", s->n_tokens > 1 ? "}" : "");
    fflush(stdout);
    return 0; /* non-zero would stop the run */
}

int main(int argc, char **argv) {
    const char *prompt = argc > 2 ? argv[2] : "Once upon a time";
    tempo_error err;
    tempo_gen_params gp;
    tempo_gen_params_init(&gp);
    gp.max_tokens = 24;
    tempo_model *m = argc > 1 ? tempo_model_open(argv[1], NULL, &err) : NULL; /* NULL: default model parameters */
    tempo_result *r = m ? (printf("%s", prompt), tempo_generate(m, prompt, &gp, on_step, NULL, NULL, &err)) : NULL;
    if (r) printf("\nclean: %s\n%d steps, %d parallel, stop: %s\n", r->clean_text, r->n_steps,
                  r->parallel_steps, tempo_stop_reason_name(r->stop_reason));
    else fprintf(stderr, "example_embed: %s\n", argc > 1 ? err.message : "usage: example_embed MODEL.gguf [PROMPT]");
    tempo_result_free(r);
    tempo_model_close(m);
    return r ? 0 : 1;
}
