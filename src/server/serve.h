/* serve.h: the entry of `tempo serve`, for the CLI's dispatch (src/cli/main.c). */
#ifndef TEMPO_SERVE_H
#define TEMPO_SERVE_H

/* `tempo serve ...`: argv[0] is "serve". Runs until SIGINT/SIGTERM; returns the exit status. */
int tempo_serve_main(int argc, char **argv);

#endif
