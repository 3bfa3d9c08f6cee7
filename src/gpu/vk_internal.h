/* vk_internal.h: what the Vulkan backend's files share. Not a public header.
 *
 * The Vulkan loader is opened at run time (dlopen of libvulkan.so.1), so a
 * binary built with the backend starts on machines without Vulkan; every
 * function we call is in the table below, loaded once per process.
 *
 * Shaders address buffers through buffer device addresses (Vulkan 1.2
 * bufferDeviceAddress): a dispatch is a pipeline plus push constants holding
 * 64-bit addresses and sizes, so there are no descriptor sets to manage and no
 * maxStorageBufferRange limit on weight matrices.
 */
#ifndef TEMPO_VK_INTERNAL_H
#define TEMPO_VK_INTERNAL_H

#ifdef TEMPO_VULKAN

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gpu/gpu.h"

#define VK_INSTANCE_FNS(X)                                                                    \
    X(vkDestroyInstance) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties)       \
    X(vkGetPhysicalDeviceProperties2) X(vkGetPhysicalDeviceFeatures2)                        \
    X(vkGetPhysicalDeviceMemoryProperties) X(vkGetPhysicalDeviceMemoryProperties2)           \
    X(vkGetPhysicalDeviceQueueFamilyProperties) X(vkEnumerateDeviceExtensionProperties)      \
    X(vkCreateDevice) X(vkGetDeviceProcAddr)

#define VK_DEVICE_FNS(X)                                                                      \
    X(vkDestroyDevice) X(vkGetDeviceQueue) X(vkCreateBuffer) X(vkDestroyBuffer)               \
    X(vkGetBufferMemoryRequirements) X(vkAllocateMemory) X(vkFreeMemory) X(vkBindBufferMemory) \
    X(vkMapMemory) X(vkUnmapMemory) X(vkGetBufferDeviceAddress) X(vkCreateShaderModule)      \
    X(vkDestroyShaderModule) X(vkCreatePipelineLayout) X(vkDestroyPipelineLayout)            \
    X(vkCreateComputePipelines) X(vkDestroyPipeline) X(vkCreateCommandPool)                  \
    X(vkDestroyCommandPool) X(vkAllocateCommandBuffers) X(vkFreeCommandBuffers)              \
    X(vkBeginCommandBuffer) X(vkEndCommandBuffer) X(vkResetCommandBuffer)                    \
    X(vkCmdBindPipeline) X(vkCmdPushConstants) X(vkCmdDispatch) X(vkCmdPipelineBarrier)      \
    X(vkCmdCopyBuffer) X(vkCmdFillBuffer) X(vkCreateFence) X(vkDestroyFence)                 \
    X(vkResetFences) X(vkWaitForFences) X(vkQueueSubmit) X(vkDeviceWaitIdle)                \
    X(vkCreateQueryPool) X(vkDestroyQueryPool) X(vkCmdResetQueryPool) X(vkCmdWriteTimestamp) \
    X(vkGetQueryPoolResults)

typedef struct {
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
    PFN_vkCreateInstance vkCreateInstance;
    PFN_vkEnumerateInstanceVersion vkEnumerateInstanceVersion;
#define X(f) PFN_##f f;
    VK_INSTANCE_FNS(X)
    VK_DEVICE_FNS(X)
#undef X
} tp_vk_fns;

/* The shaders (src/gpu/shaders). Each pipeline is one shader with fixed
 * specialization constants; they are created on first use and kept. */
enum {
    SH_MM_F = 0,      /* matmul, float weights (F32/F16/BF16), f32 activations */
    SH_MM_Q,          /* matmul, block-quantized weights, Q8_0/Q8_K activations */
    SH_QUANT,         /* activations -> Q8_0 / Q8_K groups */
    SH_RMSNORM,
    SH_ROPE_KV,       /* rope on q and k, K/V into the cache rows */
    SH_ATTN,
    SH_SOFTMAX,       /* per-row max and 1/sum */
    SH_MIX,           /* the TEMPO mixture of softmaxed rows */
    SH_READBW,        /* bandwidth probe */
    SH_COUNT
};

#define TP_VK_MAX_SPEC 4
#define TP_VK_MAX_PIPELINES 64
#define TP_VK_MAX_QUERIES 1024

typedef struct {
    int shader;
    uint32_t spec[TP_VK_MAX_SPEC];
    VkPipeline pipe;
} tp_vk_pipeline;

/* One device buffer with its memory. */
typedef struct {
    VkBuffer buf;
    VkDeviceMemory mem;
    VkDeviceAddress addr;
    size_t size;
    void *map;        /* host pointer when host-visible */
    int kind;         /* TP_GPU_MEM_* */
    bool host;        /* host-visible staging */
} tp_vk_buf;

struct tp_gpu {
    int index;
    int refs;
    VkPhysicalDevice pd;
    VkDevice dev;
    VkQueue queue;
    uint32_t queue_family;
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties memp;
    uint32_t subgroup_size;
    int heap;                   /* the device-local heap we count against */
    int type_device;            /* memory type for device buffers */
    int type_host;              /* memory type for staging (host-visible, coherent) */
    bool device_is_host_visible; /* unified memory: device buffers can be mapped */
    bool has_budget;            /* VK_EXT_memory_budget */
    uint64_t heap_size;         /* the heap's size (TEMPO_VULKAN_MEMORY_MB is applied when asked: tp_vk_heap) */
    uint64_t max_alloc;         /* maxMemoryAllocationSize */
    VkPipelineLayout layout;    /* one layout for every pipeline: 128 bytes of push constants */
    VkShaderModule modules[SH_COUNT];
    tp_vk_pipeline pipes[TP_VK_MAX_PIPELINES];
    int n_pipes;
    pthread_mutex_t lock;       /* pipelines, accounting, queue submission */
    uint64_t by_kind[TP_GPU_MEM_KINDS];
    uint64_t dev_bytes, host_bytes, peak;
    char name[256];
    /* profiling (tp_gpu_profile_set), summed under lock */
    bool prof_on;
    double prof_s[SH_COUNT + 1]; /* per shader, then copies */
    uint64_t prof_n[SH_COUNT + 1];
    double prof_span_s, prof_record_s, prof_wait_s;
    uint64_t prof_submits;
};

/* A recording: one command buffer and its fence, reused. */
typedef struct {
    tp_gpu *g;
    VkCommandPool pool;
    VkCommandBuffer cb;
    VkFence fence;
    bool recording;
    /* profiling: a timestamp after every command, labelled with its shader */
    VkQueryPool qp;
    uint32_t nq;
    int8_t label[TP_VK_MAX_QUERIES];
    double t_begin;
} tp_vk_cmd;

extern tp_vk_fns tp_vk;

/* vk_device.c */
int tp_vk_buf_new(tp_gpu *g, tp_vk_buf *b, size_t size, int kind, bool host, char *err);
void tp_vk_buf_free(tp_gpu *g, tp_vk_buf *b);
/* Can `bytes` more device memory be allocated? 0, or -1 with a message naming `what`. */
int tp_vk_check_fits(tp_gpu *g, uint64_t bytes, const char *what, char *err);
uint64_t tp_vk_free_bytes(tp_gpu *g);
/* The device memory we count against: the heap, lowered by TEMPO_VULKAN_MEMORY_MB. */
uint64_t tp_vk_heap(const tp_gpu *g);
VkPipeline tp_vk_pipeline_get(tp_gpu *g, int shader, const uint32_t *spec, int n_spec, char *err);
int tp_vk_cmd_init(tp_gpu *g, tp_vk_cmd *c, char *err);
void tp_vk_cmd_free(tp_vk_cmd *c);
void tp_vk_cmd_begin(tp_vk_cmd *c);
/* End, submit, wait. 0 or -1 with err. */
int tp_vk_cmd_submit(tp_vk_cmd *c, char *err);
/* Compute-to-compute (and transfer) memory barrier. */
void tp_vk_barrier(tp_vk_cmd *c);
void tp_vk_dispatch(tp_vk_cmd *c, VkPipeline p, const void *pc, size_t pc_size, uint32_t gx, uint32_t gy, uint32_t gz);
void tp_vk_copy(tp_vk_cmd *c, const tp_vk_buf *src, size_t src_off, const tp_vk_buf *dst, size_t dst_off, size_t n);
/* Copy host bytes into a device buffer (through a staging buffer unless the
 * buffer is host-visible). Not for the hot path. */
int tp_vk_upload(tp_gpu *g, tp_vk_buf *dst, size_t off, const void *src, size_t n, char *err);
int tp_vk_download(tp_gpu *g, const tp_vk_buf *src, size_t off, void *dst, size_t n, char *err);
const char *tp_vk_result_str(VkResult r);

/* vk_ops.c: recording of each kernel (push constants + dispatch). Addresses
 * are device addresses; no barrier is recorded (the caller places them). */
typedef struct {
    VkDeviceAddress addr;  /* row 0 */
    uint32_t type;         /* ggml type id as stored on the device */
    int n_in, n_out;
    size_t row_bytes;
} tp_vk_weight;

/* Activation kind a weight type needs: 0 f32, 1 Q8_0, 2 Q8_K. */
int tp_vk_act_kind(uint32_t type);
/* Is this type computed directly (else it is converted to F16 on upload)? */
bool tp_vk_type_native(uint32_t type);
/* Bytes of the quantized-activation buffer for nb rows of n values. */
size_t tp_vk_qact_bytes(int nb, int n);

/* Quantize nb rows of n values (row stride n); x2 != 0: the rows are silu(x) * x2. */
int tp_vk_op_quant(tp_vk_cmd *c, int kind, VkDeviceAddress x, VkDeviceAddress x2, VkDeviceAddress xq, int n, int nb,
                   char *err);
/* For each of nw (1..3) weights of one type and input length, in one dispatch:
 * y_i[b*ldy_i + r] (+)= W_i x[b]; x f32 [nb][n_in] (row stride ldx; x2 != 0:
 * the input is silu(x) * x2) or, for quantized weights, its quantized copy xq
 * made by tp_vk_op_quant. */
int tp_vk_op_matmul(tp_vk_cmd *c, const tp_vk_weight *const *w, int nw, VkDeviceAddress x, VkDeviceAddress x2, int ldx,
                    VkDeviceAddress xq, const VkDeviceAddress *y, const int *ldy, int nb, bool accumulate, char *err);
int tp_vk_op_rmsnorm(tp_vk_cmd *c, VkDeviceAddress x, int ldx, VkDeviceAddress w, VkDeviceAddress out, int ldo,
                     int n, int nb, float eps, char *err);
int tp_vk_op_softmax_mix(tp_vk_cmd *c, VkDeviceAddress logits, VkDeviceAddress stats, VkDeviceAddress mix,
                         VkDeviceAddress probs, int nb, int n, char *err);

#endif /* TEMPO_VULKAN */
#endif
