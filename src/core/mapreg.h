/* mapreg.h: which file each read-only mapping of the process belongs to.
 *
 * Model files are memory-mapped; if one is truncated or rewritten while in use,
 * reading a page past its new end raises SIGBUS. The readers register every
 * mapping here so that a SIGBUS handler (the CLI's) can name the file in its
 * message. Lookup is async-signal-safe: it only reads a fixed table of atomics.
 */
#ifndef TEMPO_MAPREG_H
#define TEMPO_MAPREG_H

#include <stddef.h>

/* Remember that [addr, addr + len) maps `path` (copied). Silently does nothing
 * when the table is full (the handler then says "a mapped model file"). 0, or
 * -1 with err when the copy of the path cannot be allocated (nothing is
 * registered then; the caller unmaps and fails like any other allocation). */
int tp_map_register(const void *addr, size_t len, const char *path, char *err);
/* Forget the mapping that starts at addr (call before munmap). */
void tp_map_unregister(const void *addr);
/* The path of the registered mapping holding addr, or NULL. Async-signal-safe. */
const char *tp_map_lookup(const void *addr);

#endif
