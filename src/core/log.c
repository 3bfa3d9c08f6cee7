/* log.c: the log callback (see log.h). Calls are serialised by a mutex so a callback that writes
 * to a stream need not be thread-safe itself. */
#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static tempo_log_fn log_fn;
static void *log_user;

void tempo_log_set(tempo_log_fn fn, void *user) {
    pthread_mutex_lock(&log_lock);
    log_fn = fn;
    log_user = user;
    pthread_mutex_unlock(&log_lock);
}

bool tp_log_enabled(void) {
    pthread_mutex_lock(&log_lock);
    bool on = log_fn != NULL;
    pthread_mutex_unlock(&log_lock);
    return on;
}

void tp_log(tempo_log_level level, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_lock);
    if (log_fn) log_fn(level, line, log_user);
    pthread_mutex_unlock(&log_lock);
}
