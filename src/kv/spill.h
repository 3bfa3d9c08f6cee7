/* spill.h: the file-backed storage of an offloaded KV cache (--kv-offload DIR).
 *
 * One file per layer and K/V (2 x n_layers files: "regions"), created in DIR and unlinked at
 * once: the files have no name from the start, their space is given back when the process ends
 * however it ends (exit, error, SIGINT, kill -9), and nothing is ever left in DIR. Each file is
 * mapped shared for the cache's whole capacity, so the K/V rows keep their usual addresses and
 * the forward pass reads them as it reads an in-memory cache; the kernel pages them in on use.
 * Rows can be let go of (tp_kv_spill_drop): their pages leave the process's memory and stay in
 * the file (and the page cache), and the next read pages them back in. Disk blocks are allocated
 * ahead of the rows written (posix_fallocate, in steps of TP_KV_SPILL_GROW bytes), so a full disk
 * is an error at that point, never a SIGBUS.
 */
#ifndef TEMPO_SPILL_H
#define TEMPO_SPILL_H

#include <stddef.h>

#define TP_KV_SPILL_GROW (64 * 1024)

typedef struct tp_kv_spill tp_kv_spill;

/* n_regions files of region_bytes (rounded up to pages) each in dir. NULL with err naming
 * --kv-offload, the folder and the reason. */
tp_kv_spill *tp_kv_spill_new(const char *dir, int n_regions, size_t region_bytes, char *err);
void tp_kv_spill_free(tp_kv_spill *sp);
void *tp_kv_spill_region(const tp_kv_spill *sp, int i);

/* Disk blocks for the first `bytes` of every region. 0, or -1 with err (a full disk, a file size
 * limit: the message names --kv-offload, the folder, the size and the system's reason). */
int tp_kv_spill_reserve(tp_kv_spill *sp, size_t bytes, char *err);
/* Region i: its pages wholly before byte `keep_from`, and those past the first `end` bytes, leave memory
 * (they stay in the file). */
void tp_kv_spill_drop(tp_kv_spill *sp, int i, size_t keep_from, size_t end);
/* Disk bytes allocated over all regions. */
size_t tp_kv_spill_disk_bytes(const tp_kv_spill *sp);

/* The most memory an offloaded cache of n_layers may hold beyond its rows' own bytes: each region
 * keeps up to 2 partly used pages, and the layer being read may have the kernel's fault-around
 * (up to 16 pages) mapped past its last row until it is let go of. For the memory budget. */
size_t tp_kv_spill_slack_bytes(int n_layers);

#endif
