/* spv.h: the compute shaders' SPIR-V, embedded at build time.
 *
 * The Makefile compiles every src/gpu/shaders/NAME.comp with glslc and writes
 * build/gen/gpu_spv.c, which defines tp_spv_blobs: one entry per shader, ended
 * by an entry whose name is NULL. Only builds with the Vulkan backend have it.
 */
#ifndef TEMPO_GPU_SPV_H
#define TEMPO_GPU_SPV_H

#include <stddef.h>

typedef struct {
    const char *name;           /* file name without .comp */
    const unsigned char *code;  /* 4-byte aligned SPIR-V words */
    size_t size;                /* bytes */
} tp_spv_blob;

extern const tp_spv_blob tp_spv_blobs[];

#endif
