/* sigbus.h: the CLI's handler for a model file changed under its mapping. */
#ifndef TEMPO_CLI_SIGBUS_H
#define TEMPO_CLI_SIGBUS_H

/* Install a SIGBUS handler that, when the faulting address lies in a mapped
 * model file, prints "tempo: <file>: changed or truncated while in use ..."
 * and exits 1. Other bus errors keep their default action. */
void tp_cli_install_sigbus_handler(void);

#endif
