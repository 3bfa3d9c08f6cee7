/* sigbus.c: a clear message instead of a bare "Bus error" when a model file is
 * truncated or rewritten while tempo has it mapped.
 *
 * Reading a page of a mapping past the file's (new) end raises SIGBUS. The
 * library registers every model mapping (tempo_mapped_file_at), so the
 * handler can name the file. It runs on whichever thread touched the page
 * (the main thread or a worker) and uses only async-signal-safe calls:
 * tempo_mapped_file_at reads atomics, write(2) and _exit(2). A bus error at an
 * address outside every model mapping is not ours to explain: the default
 * action is restored and the faulting access runs again (and kills us as
 * before, with a core dump where enabled). */
#include "cli/sigbus.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "tempo.h"

static void put(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static void on_sigbus(int sig, siginfo_t *si, void *uctx) {
    (void)uctx;
    const char *path = tempo_mapped_file_at(si->si_addr);
    if (!path) {
        signal(sig, SIG_DFL);
        return;
    }
    put("tempo: ");
    put(path);
    put(": changed or truncated while in use (reading its memory mapping failed); "
        "do not modify a model file while tempo runs\n");
    _exit(1);
}

void tp_cli_install_sigbus_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}
