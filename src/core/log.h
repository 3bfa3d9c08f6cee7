/* log.h: the library's only way to say something: the callback installed with tempo_log_set
 * (include/tempo.h), silent by default. The library never writes to stdout or stderr itself. */
#ifndef TEMPO_LOG_H
#define TEMPO_LOG_H

#include <stdbool.h>

#include "tempo.h"

/* Format one line and hand it to the callback (nothing happens without one). */
void tp_log(tempo_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Is a callback installed? (Skip building expensive lines when not.) */
bool tp_log_enabled(void);

#endif
