/* spill.c: the file-backed storage of an offloaded KV cache (see spill.h). */
#include "kv/spill.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/common.h"

#define FAULT_AROUND_PAGES 16 /* Linux maps up to 64 KiB of cached pages around a read fault */

struct tp_kv_spill {
    int n;                  /* regions */
    size_t region_bytes;    /* mapped bytes of each (whole pages) */
    size_t allocated;       /* bytes of each region with disk blocks */
    size_t page;
    int *fd;
    void **map;
    char dir[256];          /* for messages */
};

static size_t page_size(void) {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

size_t tp_kv_spill_slack_bytes(int n_layers) {
    return (size_t)(2 * 2 * n_layers + 2 * FAULT_AROUND_PAGES) * page_size();
}

void tp_kv_spill_free(tp_kv_spill *sp) {
    if (!sp) return;
    for (int i = 0; i < sp->n; i++) {
        if (sp->map && sp->map[i] && sp->map[i] != MAP_FAILED) munmap(sp->map[i], sp->region_bytes);
        if (sp->fd && sp->fd[i] >= 0) close(sp->fd[i]);
    }
    free(sp->fd);
    free(sp->map);
    free(sp);
}

tp_kv_spill *tp_kv_spill_new(const char *dir, int n_regions, size_t region_bytes, char *err) {
    tp_kv_spill *sp = calloc(1, sizeof *sp);
    if (!sp) { tp_fail(err, "out of memory"); return NULL; }
    sp->page = page_size();
    sp->region_bytes = (region_bytes + sp->page - 1) / sp->page * sp->page;
    if (!sp->region_bytes) sp->region_bytes = sp->page;
    snprintf(sp->dir, sizeof sp->dir, "%s", dir);
    sp->fd = malloc(sizeof *sp->fd * (size_t)n_regions);
    sp->map = calloc((size_t)n_regions, sizeof *sp->map);
    if (!sp->fd || !sp->map) { tp_kv_spill_free(sp); tp_fail(err, "out of memory"); return NULL; }
    for (int i = 0; i < n_regions; i++) sp->fd[i] = -1;
    sp->n = n_regions;
    char path[4096];
    for (int i = 0; i < n_regions; i++) {
        if (snprintf(path, sizeof path, "%s/tempo-kv-XXXXXX", dir) >= (int)sizeof path) {
            tp_kv_spill_free(sp);
            tp_fail(err, "--kv-offload: the folder name '%.200s...' is too long", dir);
            return NULL;
        }
        int fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            tp_kv_spill_free(sp);
            tp_fail(err, "--kv-offload %s: cannot create a KV spill file there: %s", dir, strerror(e));
            return NULL;
        }
        unlink(path); /* nameless from now on: nothing outlives the process */
        sp->fd[i] = fd;
        sp->map[i] = mmap(NULL, sp->region_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (sp->map[i] == MAP_FAILED) {
            int e = errno;
            sp->map[i] = NULL;
            tp_kv_spill_free(sp);
            tp_fail(err, "--kv-offload %s: cannot map a KV spill file of %zu bytes: %s", dir, region_bytes, strerror(e));
            return NULL;
        }
    }
    return sp;
}

void *tp_kv_spill_region(const tp_kv_spill *sp, int i) { return sp->map[i]; }

int tp_kv_spill_reserve(tp_kv_spill *sp, size_t bytes, char *err) {
    if (bytes <= sp->allocated) return 0;
    /* whole steps of TP_KV_SPILL_GROW: a system call per region now and then, not per row */
    size_t want = (bytes + TP_KV_SPILL_GROW - 1) / TP_KV_SPILL_GROW * TP_KV_SPILL_GROW;
    if (want > sp->region_bytes) want = sp->region_bytes;
    for (int i = 0; i < sp->n; i++) {
        int e = posix_fallocate(sp->fd[i], (off_t)sp->allocated, (off_t)(want - sp->allocated));
        if (e) {
            char have[32], need[32];
            return tp_fail(err,
                           "--kv-offload %s: cannot grow the KV spill files from %s to %s: %s (free space on that "
                           "disk, or point --kv-offload at another one)",
                           sp->dir, tp_fmt_gb((double)sp->allocated * sp->n, have, sizeof have),
                           tp_fmt_gb((double)want * sp->n, need, sizeof need), strerror(e));
        }
    }
    sp->allocated = want;
    return 0;
}

void tp_kv_spill_drop(tp_kv_spill *sp, int i, size_t keep_from, size_t end) {
    char *base = sp->map[i];
    size_t head = keep_from / sp->page * sp->page;            /* whole pages before keep_from */
    size_t tail = (end + sp->page - 1) / sp->page * sp->page; /* the page after the last used one */
    if (head > 0) madvise(base, head, MADV_DONTNEED);
    if (tail < sp->region_bytes) madvise(base + tail, sp->region_bytes - tail, MADV_DONTNEED);
}

size_t tp_kv_spill_disk_bytes(const tp_kv_spill *sp) { return sp->allocated * (size_t)sp->n; }
