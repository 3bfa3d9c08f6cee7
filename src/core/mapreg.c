/* mapreg.c: the table of mapped files (see mapreg.h).
 *
 * A fixed array of slots; a slot is in use when its start is non-zero. Writers
 * (register / unregister, rare) take a mutex; the signal-time reader takes no
 * lock and reads each slot's start, length and path with atomic loads. A path
 * string is published before its start and the start cleared before the
 * string is freed, so the reader never sees a slot with a stale path. */
#include "core/mapreg.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "tempo.h"

/* A Hugging Face model can have a few hundred shards; 1024 covers every
 * published one with room to spare. */
#define MAPREG_SLOTS 1024

typedef struct {
    _Atomic uintptr_t start;
    _Atomic size_t len;
    _Atomic(char *) path;
} slot;

static slot slots[MAPREG_SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

int tp_map_register(const void *addr, size_t len, const char *path, char *err) {
    if (!addr || !len) return 0;
    if (!path) path = "?";
    char *copy = strdup(path);
    if (!copy) return tp_fail(err, "%s: out of memory (%zu bytes for its name in the table of mapped files)", path,
                              strlen(path) + 1);
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAPREG_SLOTS; i++) {
        if (atomic_load(&slots[i].start)) continue;
        atomic_store(&slots[i].path, copy);
        atomic_store(&slots[i].len, len);
        atomic_store(&slots[i].start, (uintptr_t)addr);
        copy = NULL;
        break;
    }
    pthread_mutex_unlock(&lock);
    free(copy); /* table full */
    return 0;
}

void tp_map_unregister(const void *addr) {
    if (!addr) return;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAPREG_SLOTS; i++) {
        if (atomic_load(&slots[i].start) != (uintptr_t)addr) continue;
        atomic_store(&slots[i].start, 0);
        char *p = atomic_exchange(&slots[i].path, NULL);
        free(p);
        break;
    }
    pthread_mutex_unlock(&lock);
}

const char *tp_map_lookup(const void *addr) {
    uintptr_t a = (uintptr_t)addr;
    for (int i = 0; i < MAPREG_SLOTS; i++) {
        uintptr_t s = atomic_load(&slots[i].start);
        if (!s || a < s) continue;
        if (a - s < atomic_load(&slots[i].len)) return atomic_load(&slots[i].path);
    }
    return NULL;
}

const char *tempo_mapped_file_at(const void *addr) { return tp_map_lookup(addr); }
