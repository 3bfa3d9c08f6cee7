/* vk_device.c: the Vulkan loader, devices, memory accounting, pipelines and
 * command submission of the GPU backend (see gpu.h, vk_internal.h).
 *
 * One Vulkan instance per process, created on first use and never destroyed:
 * destroying it unloads the driver (ICD), and drivers keep one-time global
 * state (lavapipe's LLVM set-up) that would then show up as leaked; the
 * loader and instance are process-lifetime infrastructure like libc. Devices
 * are shared: every model (and test) opening device N gets the same VkDevice,
 * its pipelines and its accounting. An opened device stays open until the
 * process exits even when no model uses it any more: creating it and compiling
 * its pipelines costs up to seconds on some drivers (lavapipe compiles each
 * pipeline with LLVM), which a process loading models again should not pay
 * each time. Its memory is what the buffers hold, and those are freed with
 * their owners.
 */
#ifdef TEMPO_VULKAN

#include "gpu/vk_internal.h"

#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "gpu/spv.h"

#define GB (1024.0 * 1024.0 * 1024.0)
#define FENCE_TIMEOUT_NS (120ull * 1000 * 1000 * 1000) /* a step that takes 2 minutes is a hung device */
#define STAGING_CHUNK (64u << 20)

tp_vk_fns tp_vk;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static VkInstance g_inst;
static char g_init_err[TP_ERR_LEN]; /* why there is no instance ("" = fine) */
static pthread_mutex_t g_devs_lock = PTHREAD_MUTEX_INITIALIZER;
#define MAX_DEVICES 16
static tp_gpu *g_open[MAX_DEVICES]; /* opened devices by index */

static const char *const shader_names[SH_COUNT] = {
    [SH_MM_F] = "mm_f", [SH_MM_Q] = "mm_q", [SH_QUANT] = "quant", [SH_RMSNORM] = "rmsnorm",
    [SH_ROPE_KV] = "rope_kv", [SH_ATTN] = "attn",
    [SH_SOFTMAX] = "softmax", [SH_MIX] = "mix", [SH_READBW] = "readbw",
};

bool tp_gpu_built(void) { return true; }

const char *tp_vk_result_str(VkResult r) {
    switch (r) {
    case VK_SUCCESS: return "success";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "out of host memory";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "out of device memory";
    case VK_ERROR_INITIALIZATION_FAILED: return "initialization failed";
    case VK_ERROR_DEVICE_LOST: return "device lost";
    case VK_ERROR_MEMORY_MAP_FAILED: return "memory map failed";
    case VK_ERROR_LAYER_NOT_PRESENT: return "layer not present";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "extension not present";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "feature not present";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "incompatible driver";
    case VK_ERROR_TOO_MANY_OBJECTS: return "too many objects";
    case VK_TIMEOUT: return "timeout";
    default: return "Vulkan error";
    }
}

/* ------------------------------------------------------------ the loader -- */
static void *open_loader(void) {
    static const char *const names[] = { "libvulkan.so.1", "libvulkan.so", "libvulkan.1.dylib", "libMoltenVK.dylib" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h) return h;
    }
    return NULL;
}

static void init_once(void) {
    void *lib = open_loader();
    if (!lib) {
        snprintf(g_init_err, sizeof g_init_err, "no Vulkan loader (libvulkan.so.1) on this machine");
        return;
    }
    /* dlsym returns void *; POSIX guarantees it converts to a function pointer. */
    void *sym = dlsym(lib, "vkGetInstanceProcAddr");
    memcpy(&tp_vk.vkGetInstanceProcAddr, &sym, sizeof sym);
    if (!tp_vk.vkGetInstanceProcAddr) {
        snprintf(g_init_err, sizeof g_init_err, "the Vulkan loader has no vkGetInstanceProcAddr");
        return;
    }
    tp_vk.vkCreateInstance = (PFN_vkCreateInstance)tp_vk.vkGetInstanceProcAddr(NULL, "vkCreateInstance");
    tp_vk.vkEnumerateInstanceVersion =
        (PFN_vkEnumerateInstanceVersion)tp_vk.vkGetInstanceProcAddr(NULL, "vkEnumerateInstanceVersion");
    PFN_vkEnumerateInstanceExtensionProperties enum_ext = (PFN_vkEnumerateInstanceExtensionProperties)
        tp_vk.vkGetInstanceProcAddr(NULL, "vkEnumerateInstanceExtensionProperties");
    uint32_t ver = VK_API_VERSION_1_0;
    if (tp_vk.vkEnumerateInstanceVersion) tp_vk.vkEnumerateInstanceVersion(&ver);
    if (!tp_vk.vkCreateInstance || ver < VK_API_VERSION_1_2) {
        snprintf(g_init_err, sizeof g_init_err, "the Vulkan loader is older than Vulkan 1.2");
        return;
    }
    /* MoltenVK lists its devices only to instances that accept portability drivers. */
    const char *exts[1];
    uint32_t n_exts = 0;
    VkInstanceCreateFlags flags = 0;
    uint32_t n_avail = 0;
    if (enum_ext && enum_ext(NULL, &n_avail, NULL) == VK_SUCCESS && n_avail) {
        VkExtensionProperties *ep = calloc(n_avail, sizeof *ep);
        if (!ep || enum_ext(NULL, &n_avail, ep) < 0) n_avail = 0; /* out of memory: no portability drivers */
        for (uint32_t i = 0; i < n_avail; i++)
            if (!strcmp(ep[i].extensionName, "VK_KHR_portability_enumeration")) {
                exts[n_exts++] = "VK_KHR_portability_enumeration";
                flags |= 0x00000001; /* VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR */
            }
        free(ep);
    }
    VkApplicationInfo app = { .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "tempo",
                              .pEngineName = "tempo", .apiVersion = VK_API_VERSION_1_2 };
    VkInstanceCreateInfo ci = { .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .flags = flags,
                                .pApplicationInfo = &app, .enabledExtensionCount = n_exts,
                                .ppEnabledExtensionNames = exts };
    VkResult r = tp_vk.vkCreateInstance(&ci, NULL, &g_inst);
    if (r != VK_SUCCESS) {
        snprintf(g_init_err, sizeof g_init_err, "cannot create a Vulkan instance: %s", tp_vk_result_str(r));
        g_inst = VK_NULL_HANDLE;
        return;
    }
#define X(f) tp_vk.f = (PFN_##f)tp_vk.vkGetInstanceProcAddr(g_inst, #f);
    VK_INSTANCE_FNS(X)
    VK_DEVICE_FNS(X)
#undef X
#define X(f) if (!tp_vk.f) { snprintf(g_init_err, sizeof g_init_err, "the Vulkan driver lacks %s", #f); return; }
    VK_INSTANCE_FNS(X)
    VK_DEVICE_FNS(X)
#undef X
}

static int instance(char *err) {
    pthread_once(&g_once, init_once);
    if (g_init_err[0]) return tp_fail(err, "%s", g_init_err);
    return 0;
}

/* ------------------------------------------------------------- devices -- */
static uint64_t env_cap_bytes(void) {
    const char *s = getenv("TEMPO_VULKAN_MEMORY_MB");
    if (!s || !*s) return 0;
    char *end;
    double mb = strtod(s, &end);
    if (end == s || mb <= 0) return 0;
    return (uint64_t)(mb * 1024.0 * 1024.0);
}

static bool has_ext(const VkExtensionProperties *ep, uint32_t n, const char *name) {
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(ep[i].extensionName, name)) return true;
    return false;
}

/* Everything we read about one physical device. */
typedef struct {
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties memp;
    uint32_t subgroup_size;
    bool usable, budget, portability;
    char missing[128];
    int heap;
    uint64_t heap_size, heap_free, heap_real;
    bool free_known;
    uint64_t max_alloc;
} dev_facts;

static void read_facts(VkPhysicalDevice pd, dev_facts *f) {
    memset(f, 0, sizeof *f);
    VkPhysicalDeviceSubgroupProperties sg = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES };
    VkPhysicalDeviceMaintenance3Properties m3 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES,
                                                  .pNext = &sg };
    VkPhysicalDeviceProperties2 p2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &m3 };
    tp_vk.vkGetPhysicalDeviceProperties2(pd, &p2);
    f->props = p2.properties;
    f->subgroup_size = sg.subgroupSize;
    f->max_alloc = m3.maxMemoryAllocationSize ? m3.maxMemoryAllocationSize : (1ull << 31);

    VkPhysicalDeviceVulkan12Features f12 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES };
    VkPhysicalDeviceFeatures2 f2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f12 };
    tp_vk.vkGetPhysicalDeviceFeatures2(pd, &f2);

    uint32_t n_ext = 0;
    tp_vk.vkEnumerateDeviceExtensionProperties(pd, NULL, &n_ext, NULL);
    VkExtensionProperties *ep = calloc(n_ext ? n_ext : 1, sizeof *ep);
    if (!ep || tp_vk.vkEnumerateDeviceExtensionProperties(pd, NULL, &n_ext, ep) < 0) n_ext = 0;
    f->budget = has_ext(ep, n_ext, "VK_EXT_memory_budget");
    f->portability = has_ext(ep, n_ext, "VK_KHR_portability_subset");
    free(ep);

    const char *miss = NULL;
    if (f->props.apiVersion < VK_API_VERSION_1_2) miss = "Vulkan 1.2";
    else if (!f12.bufferDeviceAddress) miss = "bufferDeviceAddress";
    else if (!f2.features.shaderInt64) miss = "shaderInt64";
    else if (!(sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) ||
             !(sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT))
        miss = "subgroup arithmetic in compute shaders";
    else if (f->props.limits.maxPushConstantsSize < 128) miss = "128 bytes of push constants";
    f->usable = miss == NULL;
    if (miss) snprintf(f->missing, sizeof f->missing, "lacks %s", miss);

    tp_vk.vkGetPhysicalDeviceMemoryProperties(pd, &f->memp);
    VkPhysicalDeviceMemoryBudgetPropertiesEXT bud = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT };
    if (f->budget) {
        VkPhysicalDeviceMemoryProperties2 mp2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
                                                  .pNext = &bud };
        tp_vk.vkGetPhysicalDeviceMemoryProperties2(pd, &mp2);
        f->memp = mp2.memoryProperties;
    }
    f->heap = -1;
    for (uint32_t h = 0; h < f->memp.memoryHeapCount; h++) {
        if (!(f->memp.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)) continue;
        if (f->heap < 0 || f->memp.memoryHeaps[h].size > f->heap_size) {
            f->heap = (int)h;
            f->heap_size = f->memp.memoryHeaps[h].size;
        }
    }
    if (f->heap < 0 && f->memp.memoryHeapCount) {
        f->heap = 0;
        f->heap_size = f->memp.memoryHeaps[0].size;
    }
    f->heap_free = f->heap_size;
    if (f->budget && f->heap >= 0) {
        uint64_t b = bud.heapBudget[f->heap], u = bud.heapUsage[f->heap];
        f->heap_free = b > u ? b - u : 0;
        f->free_known = true;
    }
    f->heap_real = f->heap_size;
    uint64_t cap = env_cap_bytes();
    if (cap && cap < f->heap_size) f->heap_size = cap;
    if (f->heap_free > f->heap_size) f->heap_free = f->heap_size;
}

static const char *kind_name(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "software";
    default: return "other";
    }
}

static int physical_devices(VkPhysicalDevice *pds, int cap) {
    uint32_t n = 0;
    if (tp_vk.vkEnumeratePhysicalDevices(g_inst, &n, NULL) != VK_SUCCESS) return 0;
    if (n > (uint32_t)cap) n = (uint32_t)cap;
    if (n && tp_vk.vkEnumeratePhysicalDevices(g_inst, &n, pds) < 0) return 0;
    return (int)n;
}

int tp_gpu_devices(tp_gpu_device_info *out, int cap, char *err) {
    char e[TP_ERR_LEN];
    if (instance(e)) return 0; /* no Vulkan: no devices */
    VkPhysicalDevice pds[MAX_DEVICES];
    int n = physical_devices(pds, MAX_DEVICES);
    for (int i = 0; i < n && i < cap; i++) {
        dev_facts f;
        read_facts(pds[i], &f);
        tp_gpu_device_info *d = &out[i];
        memset(d, 0, sizeof *d);
        d->index = i;
        snprintf(d->name, sizeof d->name, "%s", f.props.deviceName);
        d->kind = kind_name(f.props.deviceType);
        d->software = f.props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
        d->usable = f.usable;
        snprintf(d->missing, sizeof d->missing, "%s", f.missing);
        d->memory_bytes = f.heap_size;
        d->free_bytes = f.heap_free;
        d->free_known = f.free_known;
        pthread_mutex_lock(&g_devs_lock);
        tp_gpu *g = g_open[i];
        if (g) {
            pthread_mutex_lock(&g->lock);
            d->free_bytes = tp_vk_free_bytes(g);
            pthread_mutex_unlock(&g->lock);
        }
        pthread_mutex_unlock(&g_devs_lock);
        snprintf(d->api, sizeof d->api, "%u.%u.%u", VK_API_VERSION_MAJOR(f.props.apiVersion),
                 VK_API_VERSION_MINOR(f.props.apiVersion), VK_API_VERSION_PATCH(f.props.apiVersion));
        VkPhysicalDeviceDriverProperties dp = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES };
        VkPhysicalDeviceProperties2 p2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &dp };
        if (f.props.apiVersion >= VK_API_VERSION_1_2) {
            tp_vk.vkGetPhysicalDeviceProperties2(pds[i], &p2);
            snprintf(d->driver, sizeof d->driver, "%.40s %.50s", dp.driverName, dp.driverInfo);
        }
    }
    (void)err;
    return n;
}

bool tp_gpu_spec_valid(const char *s) {
    if (!s || !strcmp(s, "auto") || !strcmp(s, "cpu") || !strcmp(s, "gpu")) return true;
    if (strncmp(s, "gpu:", 4) || !s[4]) return false;
    for (const char *p = s + 4; *p; p++)
        if (*p < '0' || *p > '9') return false;
    return strlen(s + 4) < 4;
}

static int rank(const tp_gpu_device_info *d) {
    if (!strcmp(d->kind, "discrete")) return 4;
    if (!strcmp(d->kind, "integrated")) return 3;
    if (!strcmp(d->kind, "virtual")) return 2;
    if (!strcmp(d->kind, "other")) return 1;
    return 0; /* software */
}

/* Could this machine have a hardware GPU? On Linux every Vulkan GPU driver
 * works through a DRM render node (/dev/dri/renderD*) or, for NVIDIA's, the
 * /dev/nvidia* device nodes (which is also what a container gets). Without
 * either, "auto" settles on the CPU without creating a Vulkan instance: the
 * instance loads every installed driver, and Mesa's software driver alone
 * brings LLVM and some 60 MB of resident memory into a run whose limit may be
 * a few MB. Elsewhere (macOS, Windows) the instance is the only way to ask. */
static bool may_have_gpu(void) {
#if defined(__linux__)
    bool found = false;
    DIR *d = opendir("/dev/dri");
    if (d) {
        for (struct dirent *e; !found && (e = readdir(d));) found = !strncmp(e->d_name, "renderD", 7);
        closedir(d);
    }
    if (!found && (d = opendir("/dev"))) {
        for (struct dirent *e; !found && (e = readdir(d));)
            found = !strncmp(e->d_name, "nvidia", 6) && e->d_name[6] >= '0' && e->d_name[6] <= '9';
        closedir(d);
    }
    return found;
#else
    return true;
#endif
}

int tp_gpu_resolve(const char *spec, char *err) {
    if (!spec || !*spec) spec = "auto";
    if (!tp_gpu_spec_valid(spec)) {
        tp_fail(err, "--device: '%s' is not one of auto, cpu, gpu, gpu:N", spec);
        return -2;
    }
    if (!strcmp(spec, "cpu")) return TP_DEVICE_CPU;
    bool is_auto = !strcmp(spec, "auto");
    const char *allow = getenv("TEMPO_VULKAN_ALLOW_CPU");
    bool allow_sw = allow && *allow && strcmp(allow, "0");
    if (is_auto && !allow_sw && !may_have_gpu()) return TP_DEVICE_CPU;
    char e[TP_ERR_LEN] = "";
    if (instance(e)) {
        if (is_auto) return TP_DEVICE_CPU;
        tp_fail(err, "--device %s: %s", spec, e);
        return -2;
    }
    tp_gpu_device_info devs[MAX_DEVICES];
    int n = tp_gpu_devices(devs, MAX_DEVICES, err);
    if (!strncmp(spec, "gpu:", 4)) {
        int idx = atoi(spec + 4);
        if (idx >= n) {
            tp_fail(err, "--device %s: there %s %d Vulkan device%s (see `tempo devices`)", spec, n == 1 ? "is" : "are", n,
                    n == 1 ? "" : "s");
            return -2;
        }
        if (!devs[idx].usable) {
            tp_fail(err, "--device %s: %s %s, which the Vulkan backend needs", spec, devs[idx].name, devs[idx].missing);
            return -2;
        }
        return idx;
    }
    int best = -1;
    for (int i = 0; i < n && i < MAX_DEVICES; i++) {
        if (!devs[i].usable || (devs[i].software && !allow_sw)) continue;
        if (best < 0 || rank(&devs[i]) > rank(&devs[best])) best = i;
    }
    if (best >= 0) return best;
    if (is_auto) return TP_DEVICE_CPU;
    int sw = -1;
    for (int i = 0; i < n && i < MAX_DEVICES; i++)
        if (devs[i].usable && devs[i].software) sw = i;
    if (sw >= 0)
        tp_fail(err, "--device gpu: no hardware GPU with Vulkan 1.2 found; the software device gpu:%d (%s) can be "
                     "selected explicitly with --device gpu:%d", sw, devs[sw].name, sw);
    else
        tp_fail(err, "--device gpu: no usable Vulkan GPU found (%d device%s; see `tempo devices`)", n, n == 1 ? "" : "s");
    return -2;
}

/* -------------------------------------------------------- open / close -- */
static int find_type(const VkPhysicalDeviceMemoryProperties *mp, VkMemoryPropertyFlags want, VkMemoryPropertyFlags prefer,
                     int heap) {
    int best = -1;
    for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
        if ((f & want) != want) continue;
        if (heap >= 0 && (int)mp->memoryTypes[i].heapIndex != heap) continue;
        if (best < 0 || ((f & prefer) == prefer && (mp->memoryTypes[best].propertyFlags & prefer) != prefer)) best = (int)i;
    }
    return best;
}

static void gpu_destroy(tp_gpu *g) {
    if (g->dev) {
        tp_vk.vkDeviceWaitIdle(g->dev);
        for (int i = 0; i < g->n_pipes; i++) tp_vk.vkDestroyPipeline(g->dev, g->pipes[i].pipe, NULL);
        for (int i = 0; i < SH_COUNT; i++)
            if (g->modules[i]) tp_vk.vkDestroyShaderModule(g->dev, g->modules[i], NULL);
        if (g->layout) tp_vk.vkDestroyPipelineLayout(g->dev, g->layout, NULL);
        tp_vk.vkDestroyDevice(g->dev, NULL);
    }
    pthread_mutex_destroy(&g->lock);
    free(g);
}

static tp_gpu *gpu_create(int index, char *err) {
    VkPhysicalDevice pds[MAX_DEVICES];
    int n = physical_devices(pds, MAX_DEVICES);
    if (index < 0 || index >= n) {
        tp_fail(err, "Vulkan device %d does not exist (%d devices)", index, n);
        return NULL;
    }
    dev_facts f;
    read_facts(pds[index], &f);
    if (!f.usable) {
        tp_fail(err, "Vulkan device %d (%s) %s, which the backend needs", index, f.props.deviceName, f.missing);
        return NULL;
    }
    tp_gpu *g = calloc(1, sizeof *g);
    if (!g) {
        tp_fail(err, "out of memory opening Vulkan device %d (%s)", index, f.props.deviceName);
        return NULL;
    }
    pthread_mutex_init(&g->lock, NULL);
    g->index = index;
    g->pd = pds[index];
    g->props = f.props;
    g->memp = f.memp;
    g->subgroup_size = f.subgroup_size;
    g->heap = f.heap;
    g->heap_size = f.heap_real;
    g->has_budget = f.budget;
    g->max_alloc = f.max_alloc;
    snprintf(g->name, sizeof g->name, "%s", f.props.deviceName);

    uint32_t nq = 0;
    tp_vk.vkGetPhysicalDeviceQueueFamilyProperties(g->pd, &nq, NULL);
    VkQueueFamilyProperties qf[16];
    if (nq > 16) nq = 16;
    tp_vk.vkGetPhysicalDeviceQueueFamilyProperties(g->pd, &nq, qf);
    int fam = -1;
    for (uint32_t i = 0; i < nq; i++) /* a compute-only family runs beside graphics work; else any compute family */
        if ((qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && !(qf[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)) { fam = (int)i; break; }
    for (uint32_t i = 0; i < nq && fam < 0; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) fam = (int)i;
    if (fam < 0) {
        tp_fail(err, "Vulkan device %d (%s) has no compute queue", index, g->name);
        gpu_destroy(g);
        return NULL;
    }
    g->queue_family = (uint32_t)fam;

    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = { .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = g->queue_family,
                                    .queueCount = 1, .pQueuePriorities = &prio };
    VkPhysicalDeviceVulkan12Features f12 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
                                             .bufferDeviceAddress = VK_TRUE };
    VkPhysicalDeviceFeatures2 f2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f12 };
    f2.features.shaderInt64 = VK_TRUE;
    const char *exts[2];
    uint32_t n_ext = 0;
    if (f.budget) exts[n_ext++] = "VK_EXT_memory_budget";
    if (f.portability) exts[n_ext++] = "VK_KHR_portability_subset";
    VkDeviceCreateInfo dci = { .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &f2, .queueCreateInfoCount = 1,
                               .pQueueCreateInfos = &qci, .enabledExtensionCount = n_ext, .ppEnabledExtensionNames = exts };
    VkResult r = tp_vk.vkCreateDevice(g->pd, &dci, NULL, &g->dev);
    if (r != VK_SUCCESS) {
        g->dev = VK_NULL_HANDLE;
        tp_fail(err, "cannot open Vulkan device %d (%s): %s", index, g->name, tp_vk_result_str(r));
        gpu_destroy(g);
        return NULL;
    }
    tp_vk.vkGetDeviceQueue(g->dev, g->queue_family, 0, &g->queue);

    g->type_device = find_type(&g->memp, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0, g->heap);
    if (g->type_device < 0) g->type_device = find_type(&g->memp, 0, 0, -1);
    g->type_host = find_type(&g->memp, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                             VK_MEMORY_PROPERTY_HOST_CACHED_BIT, -1);
    if (g->type_device < 0 || g->type_host < 0) {
        tp_fail(err, "Vulkan device %d (%s) has no suitable memory types", index, g->name);
        gpu_destroy(g);
        return NULL;
    }
    g->device_is_host_visible =
        (g->memp.memoryTypes[g->type_device].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) &&
        (g->memp.memoryTypes[g->type_device].propertyFlags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);

    VkPushConstantRange pcr = { .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = 128 };
    VkPipelineLayoutCreateInfo plci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                        .pushConstantRangeCount = 1, .pPushConstantRanges = &pcr };
    r = tp_vk.vkCreatePipelineLayout(g->dev, &plci, NULL, &g->layout);
    if (r != VK_SUCCESS) {
        g->layout = VK_NULL_HANDLE;
        tp_fail(err, "Vulkan device %d (%s): cannot create a pipeline layout: %s", index, g->name, tp_vk_result_str(r));
        gpu_destroy(g);
        return NULL;
    }
    return g;
}

tp_gpu *tp_gpu_open(int index, char *err) {
    if (instance(err)) return NULL;
    if (index < 0 || index >= MAX_DEVICES) {
        tp_fail(err, "Vulkan device %d does not exist", index);
        return NULL;
    }
    pthread_mutex_lock(&g_devs_lock);
    tp_gpu *g = g_open[index];
    if (!g) g = g_open[index] = gpu_create(index, err);
    if (g) g->refs++;
    pthread_mutex_unlock(&g_devs_lock);
    return g;
}

void tp_gpu_close(tp_gpu *g) {
    if (!g) return;
    pthread_mutex_lock(&g_devs_lock);
    g->refs--; /* the device itself stays open (see the top of this file) */
    pthread_mutex_unlock(&g_devs_lock);
}

const char *tp_gpu_name(const tp_gpu *g) { return g->name; }
int tp_gpu_index(const tp_gpu *g) { return g->index; }
bool tp_gpu_is_software(const tp_gpu *g) { return g->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU; }

/* ---------------------------------------------------------------- memory -- */
uint64_t tp_vk_heap(const tp_gpu *g) {
    uint64_t cap = env_cap_bytes(); /* read each time: it may be set after the device was opened (tests) */
    return cap && cap < g->heap_size ? cap : g->heap_size;
}

uint64_t tp_vk_free_bytes(tp_gpu *g) {
    /* Ours first: what the heap (or TEMPO_VULKAN_MEMORY_MB) leaves after our allocations. */
    uint64_t heap = tp_vk_heap(g);
    uint64_t left = g->dev_bytes < heap ? heap - g->dev_bytes : 0;
    if (g->has_budget) {
        /* The driver's view: other processes' use and its own reservations count too. */
        VkPhysicalDeviceMemoryBudgetPropertiesEXT bud = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT };
        VkPhysicalDeviceMemoryProperties2 mp2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
                                                  .pNext = &bud };
        tp_vk.vkGetPhysicalDeviceMemoryProperties2(g->pd, &mp2);
        uint64_t b = bud.heapBudget[g->heap], u = bud.heapUsage[g->heap];
        uint64_t drv = b > u ? b - u : 0;
        if (drv < left) left = drv;
    }
    return left;
}

int tp_vk_check_fits(tp_gpu *g, uint64_t bytes, const char *what, char *err) {
    pthread_mutex_lock(&g->lock);
    uint64_t left = tp_vk_free_bytes(g);
    pthread_mutex_unlock(&g->lock);
    if (bytes <= left) return 0;
    char a[32], b[32], c[32];
    return tp_fail(err, "%s needs %s on Vulkan device %d (%s) but %s of its %s is free", what,
                   tp_fmt_gb((double)bytes, a, sizeof a), g->index, g->name, tp_fmt_gb((double)left, b, sizeof b),
                   tp_fmt_gb((double)tp_vk_heap(g), c, sizeof c));
}

void tp_gpu_mem_get(const tp_gpu *gc, tp_gpu_mem *out) {
    tp_gpu *g = (tp_gpu *)gc; /* the lock is not part of the observable state */
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&g->lock);
    memcpy(out->by_kind, g->by_kind, sizeof out->by_kind);
    out->device_bytes = g->dev_bytes;
    out->host_bytes = g->host_bytes;
    out->peak_bytes = g->peak;
    out->total_bytes = tp_vk_heap(g);
    out->free_bytes = tp_vk_free_bytes(g);
    pthread_mutex_unlock(&g->lock);
}

static void account(tp_gpu *g, const tp_vk_buf *b, int sign) {
    pthread_mutex_lock(&g->lock);
    uint64_t n = b->size;
    if (sign > 0) {
        g->by_kind[b->kind] += n;
        if (b->host) g->host_bytes += n; else g->dev_bytes += n;
        if (g->dev_bytes + g->host_bytes > g->peak) g->peak = g->dev_bytes + g->host_bytes;
    } else {
        g->by_kind[b->kind] -= n;
        if (b->host) g->host_bytes -= n; else g->dev_bytes -= n;
    }
    pthread_mutex_unlock(&g->lock);
}

static const char *const kind_names[TP_GPU_MEM_KINDS] = { "weights", "KV cache", "scratch buffers", "staging buffers" };

int tp_vk_buf_new(tp_gpu *g, tp_vk_buf *b, size_t size, int kind, bool host, char *err) {
    memset(b, 0, sizeof *b);
    /* Shaders read whole 32-bit words, sometimes one past a 2-byte aligned
     * block's end: keep 16 bytes of slack after the data. */
    size_t alloc = (size + 16 + 15) & ~(size_t)15;
    char what[96];
    snprintf(what, sizeof what, "%s of %zu bytes", kind_names[kind], size);
    if (!host && tp_vk_check_fits(g, alloc, what, err)) return -1;
    if (alloc > g->max_alloc) {
        char a[32], c[32];
        return tp_fail(err, "%s: %s is over the largest allocation Vulkan device %d (%s) allows (%s)", kind_names[kind],
                       tp_fmt_gb((double)alloc, a, sizeof a), g->index, g->name, tp_fmt_gb((double)g->max_alloc, c, sizeof c));
    }
    VkBufferCreateInfo bci = { .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = alloc,
                               .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                        VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT,
                               .sharingMode = VK_SHARING_MODE_EXCLUSIVE };
    VkResult r = tp_vk.vkCreateBuffer(g->dev, &bci, NULL, &b->buf);
    if (r != VK_SUCCESS) {
        b->buf = VK_NULL_HANDLE;
        return tp_fail(err, "Vulkan device %d (%s): cannot create a buffer for %s: %s", g->index, g->name, what,
                       tp_vk_result_str(r));
    }
    VkMemoryRequirements req;
    tp_vk.vkGetBufferMemoryRequirements(g->dev, b->buf, &req);
    bool use_host = host;
    int type = host ? g->type_host : g->type_device;
    if (!(req.memoryTypeBits & (1u << type))) {
        tp_vk.vkDestroyBuffer(g->dev, b->buf, NULL);
        b->buf = VK_NULL_HANDLE;
        return tp_fail(err, "Vulkan device %d (%s): no memory type for %s", g->index, g->name, what);
    }
    VkMemoryAllocateFlagsInfo fi = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO,
                                     .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT };
    VkMemoryAllocateInfo mai = { .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .pNext = &fi,
                                 .allocationSize = req.size, .memoryTypeIndex = (uint32_t)type };
    r = tp_vk.vkAllocateMemory(g->dev, &mai, NULL, &b->mem);
    if (r != VK_SUCCESS) {
        tp_vk.vkDestroyBuffer(g->dev, b->buf, NULL);
        b->buf = VK_NULL_HANDLE;
        b->mem = VK_NULL_HANDLE;
        char a[32];
        return tp_fail(err, "Vulkan device %d (%s) could not allocate %s for %s: %s", g->index, g->name,
                       tp_fmt_gb((double)req.size, a, sizeof a), what, tp_vk_result_str(r));
    }
    tp_vk.vkBindBufferMemory(g->dev, b->buf, b->mem, 0);
    VkBufferDeviceAddressInfo ai = { .sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO, .buffer = b->buf };
    b->addr = tp_vk.vkGetBufferDeviceAddress(g->dev, &ai);
    b->size = req.size;
    b->kind = kind;
    b->host = use_host;
    if (host || g->device_is_host_visible) {
        if (tp_vk.vkMapMemory(g->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map) != VK_SUCCESS) b->map = NULL;
        if (host && !b->map) {
            tp_vk.vkFreeMemory(g->dev, b->mem, NULL);
            tp_vk.vkDestroyBuffer(g->dev, b->buf, NULL);
            memset(b, 0, sizeof *b);
            return tp_fail(err, "Vulkan device %d (%s): cannot map %s", g->index, g->name, what);
        }
    }
    account(g, b, +1);
    return 0;
}

void tp_vk_buf_free(tp_gpu *g, tp_vk_buf *b) {
    if (!b || !b->buf) return;
    account(g, b, -1);
    if (b->map) tp_vk.vkUnmapMemory(g->dev, b->mem);
    tp_vk.vkDestroyBuffer(g->dev, b->buf, NULL);
    tp_vk.vkFreeMemory(g->dev, b->mem, NULL);
    memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------- pipelines -- */
static VkShaderModule module_for(tp_gpu *g, int shader, char *err) {
    if (g->modules[shader]) return g->modules[shader];
    const tp_spv_blob *blob = NULL;
    for (const tp_spv_blob *b = tp_spv_blobs; b->name; b++)
        if (!strcmp(b->name, shader_names[shader])) blob = b;
    if (!blob) {
        tp_fail(err, "internal: shader %s is not embedded", shader_names[shader]);
        return VK_NULL_HANDLE;
    }
    VkShaderModuleCreateInfo ci = { .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = blob->size,
                                    .pCode = (const uint32_t *)(const void *)blob->code };
    VkResult r = tp_vk.vkCreateShaderModule(g->dev, &ci, NULL, &g->modules[shader]);
    if (r != VK_SUCCESS) {
        g->modules[shader] = VK_NULL_HANDLE;
        tp_fail(err, "Vulkan device %d (%s): cannot load shader %s: %s", g->index, g->name, shader_names[shader],
                tp_vk_result_str(r));
    }
    return g->modules[shader];
}

VkPipeline tp_vk_pipeline_get(tp_gpu *g, int shader, const uint32_t *spec, int n_spec, char *err) {
    uint32_t key[TP_VK_MAX_SPEC] = { 0 };
    memcpy(key, spec, sizeof(uint32_t) * (size_t)n_spec);
    pthread_mutex_lock(&g->lock);
    VkPipeline p = VK_NULL_HANDLE;
    for (int i = 0; i < g->n_pipes && !p; i++)
        if (g->pipes[i].shader == shader && !memcmp(g->pipes[i].spec, key, sizeof key)) p = g->pipes[i].pipe;
    if (!p) {
        VkShaderModule mod = module_for(g, shader, err);
        if (mod && g->n_pipes == TP_VK_MAX_PIPELINES) {
            tp_fail(err, "internal: more than %d pipelines", TP_VK_MAX_PIPELINES);
        } else if (mod) {
            VkSpecializationMapEntry me[TP_VK_MAX_SPEC];
            for (int i = 0; i < TP_VK_MAX_SPEC; i++)
                me[i] = (VkSpecializationMapEntry){ (uint32_t)i, (uint32_t)(4 * i), 4 };
            VkSpecializationInfo si = { TP_VK_MAX_SPEC, me, sizeof key, key };
            VkComputePipelineCreateInfo ci = {
                .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
                .stage = { .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                           .module = mod, .pName = "main", .pSpecializationInfo = &si },
                .layout = g->layout };
            VkResult r = tp_vk.vkCreateComputePipelines(g->dev, VK_NULL_HANDLE, 1, &ci, NULL, &p);
            if (r != VK_SUCCESS) {
                p = VK_NULL_HANDLE;
                tp_fail(err, "Vulkan device %d (%s): cannot build the %s pipeline: %s", g->index, g->name,
                        shader_names[shader], tp_vk_result_str(r));
            } else {
                tp_vk_pipeline *e = &g->pipes[g->n_pipes++];
                e->shader = shader;
                memcpy(e->spec, key, sizeof key);
                e->pipe = p;
            }
        }
    }
    pthread_mutex_unlock(&g->lock);
    return p;
}

/* -------------------------------------------------------------- commands -- */
/* Profiling: a timestamp once the commands before it are done, labelled with
 * the shader (or SH_COUNT for a copy, -1 for the start). */
static void stamp(tp_vk_cmd *c, int label) {
    if (!c->qp || c->nq == TP_VK_MAX_QUERIES) return;
    tp_vk.vkCmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, c->qp, c->nq);
    c->label[c->nq++] = (int8_t)label;
}

/* Sum a finished submission's timestamps into the device's profile. */
static void profile_add(tp_vk_cmd *c, double t_submit, double t_done) {
    tp_gpu *g = c->g;
    uint64_t ts[TP_VK_MAX_QUERIES];
    if (c->nq < 2 ||
        tp_vk.vkGetQueryPoolResults(g->dev, c->qp, 0, c->nq, sizeof(uint64_t) * c->nq, ts, sizeof(uint64_t),
                                    VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) != VK_SUCCESS)
        return;
    double ns = (double)g->props.limits.timestampPeriod;
    pthread_mutex_lock(&g->lock);
    for (uint32_t i = 1; i < c->nq; i++) {
        int l = c->label[i] < 0 ? SH_COUNT : c->label[i];
        g->prof_s[l] += (double)(ts[i] - ts[i - 1]) * ns * 1e-9;
        g->prof_n[l]++;
    }
    g->prof_span_s += (double)(ts[c->nq - 1] - ts[0]) * ns * 1e-9;
    g->prof_record_s += t_submit - c->t_begin;
    g->prof_wait_s += t_done - t_submit;
    g->prof_submits++;
    pthread_mutex_unlock(&g->lock);
}

void tp_gpu_profile_set(tp_gpu *g, bool on) {
    pthread_mutex_lock(&g->lock);
    g->prof_on = on;
    pthread_mutex_unlock(&g->lock);
}

void tp_gpu_profile_read(tp_gpu *g, tp_gpu_profile *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&g->lock);
    for (int i = 0; i <= SH_COUNT && out->n < TP_GPU_PROF_ROWS; i++) {
        if (!g->prof_n[i]) continue;
        out->name[out->n] = i < SH_COUNT ? shader_names[i] : "copy";
        out->gpu_s[out->n] = g->prof_s[i];
        out->count[out->n++] = g->prof_n[i];
    }
    out->submits = g->prof_submits;
    out->span_s = g->prof_span_s;
    out->record_s = g->prof_record_s;
    out->wait_s = g->prof_wait_s;
    memset(g->prof_s, 0, sizeof g->prof_s);
    memset(g->prof_n, 0, sizeof g->prof_n);
    g->prof_span_s = g->prof_record_s = g->prof_wait_s = 0;
    g->prof_submits = 0;
    pthread_mutex_unlock(&g->lock);
}

int tp_vk_cmd_init(tp_gpu *g, tp_vk_cmd *c, char *err) {
    memset(c, 0, sizeof *c);
    c->g = g;
    VkCommandPoolCreateInfo pci = { .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                    .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                    .queueFamilyIndex = g->queue_family };
    VkResult r = tp_vk.vkCreateCommandPool(g->dev, &pci, NULL, &c->pool);
    if (r == VK_SUCCESS) {
        VkCommandBufferAllocateInfo ai = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = c->pool,
                                           .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1 };
        r = tp_vk.vkAllocateCommandBuffers(g->dev, &ai, &c->cb);
    }
    if (r == VK_SUCCESS) {
        VkFenceCreateInfo fci = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
        r = tp_vk.vkCreateFence(g->dev, &fci, NULL, &c->fence);
    }
    pthread_mutex_lock(&g->lock);
    bool prof = g->prof_on && g->props.limits.timestampComputeAndGraphics;
    pthread_mutex_unlock(&g->lock);
    if (r == VK_SUCCESS && prof) {
        VkQueryPoolCreateInfo qci = { .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                      .queryType = VK_QUERY_TYPE_TIMESTAMP, .queryCount = TP_VK_MAX_QUERIES };
        if (tp_vk.vkCreateQueryPool(g->dev, &qci, NULL, &c->qp) != VK_SUCCESS) c->qp = VK_NULL_HANDLE; /* no profile */
    }
    if (r != VK_SUCCESS) {
        tp_vk_cmd_free(c);
        return tp_fail(err, "Vulkan device %d (%s): cannot create a command buffer: %s", g->index, g->name,
                       tp_vk_result_str(r));
    }
    return 0;
}

void tp_vk_cmd_free(tp_vk_cmd *c) {
    if (!c->g) return;
    VkDevice d = c->g->dev;
    if (c->fence) tp_vk.vkDestroyFence(d, c->fence, NULL);
    if (c->qp) tp_vk.vkDestroyQueryPool(d, c->qp, NULL);
    if (c->cb) tp_vk.vkFreeCommandBuffers(d, c->pool, 1, &c->cb);
    if (c->pool) tp_vk.vkDestroyCommandPool(d, c->pool, NULL);
    memset(c, 0, sizeof *c);
}

void tp_vk_cmd_begin(tp_vk_cmd *c) {
    tp_vk.vkResetCommandBuffer(c->cb, 0);
    VkCommandBufferBeginInfo bi = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                    .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT };
    tp_vk.vkBeginCommandBuffer(c->cb, &bi);
    c->recording = true;
    if (c->qp) {
        c->t_begin = tp_now();
        c->nq = 0;
        tp_vk.vkCmdResetQueryPool(c->cb, c->qp, 0, TP_VK_MAX_QUERIES);
        stamp(c, -1);
    }
}

int tp_vk_cmd_submit(tp_vk_cmd *c, char *err) {
    tp_gpu *g = c->g;
    /* Make the device's writes visible to the host before the fence signals. */
    VkMemoryBarrier mb = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                           .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                           .dstAccessMask = VK_ACCESS_HOST_READ_BIT };
    tp_vk.vkCmdPipelineBarrier(c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                               VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    VkResult r = tp_vk.vkEndCommandBuffer(c->cb);
    c->recording = false;
    if (r != VK_SUCCESS)
        return tp_fail(err, "Vulkan device %d (%s): recording failed: %s", g->index, g->name, tp_vk_result_str(r));
    VkSubmitInfo si = { .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &c->cb };
    double t_submit = c->qp ? tp_now() : 0;
    pthread_mutex_lock(&g->lock); /* vkQueueSubmit needs the queue to itself */
    r = tp_vk.vkQueueSubmit(g->queue, 1, &si, c->fence);
    pthread_mutex_unlock(&g->lock);
    if (r == VK_SUCCESS) r = tp_vk.vkWaitForFences(g->dev, 1, &c->fence, VK_TRUE, FENCE_TIMEOUT_NS);
    tp_vk.vkResetFences(g->dev, 1, &c->fence);
    if (r == VK_SUCCESS && c->qp) profile_add(c, t_submit, tp_now());
    if (r != VK_SUCCESS)
        return tp_fail(err, "Vulkan device %d (%s): %s", g->index, g->name,
                       r == VK_TIMEOUT ? "the device did not finish the step within 120 s" : tp_vk_result_str(r));
    return 0;
}

void tp_vk_barrier(tp_vk_cmd *c) {
    VkMemoryBarrier mb = { .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                           .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                           .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                                            VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT };
    VkPipelineStageFlags st = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    tp_vk.vkCmdPipelineBarrier(c->cb, st, st, 0, 1, &mb, 0, NULL, 0, NULL);
}

void tp_vk_dispatch(tp_vk_cmd *c, VkPipeline p, const void *pc, size_t pc_size, uint32_t gx, uint32_t gy, uint32_t gz) {
    tp_vk.vkCmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p);
    tp_vk.vkCmdPushConstants(c->cb, c->g->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, (uint32_t)pc_size, pc);
    tp_vk.vkCmdDispatch(c->cb, gx, gy, gz);
    if (c->qp) {
        int shader = -1;
        pthread_mutex_lock(&c->g->lock);
        for (int i = 0; i < c->g->n_pipes && shader < 0; i++)
            if (c->g->pipes[i].pipe == p) shader = c->g->pipes[i].shader;
        pthread_mutex_unlock(&c->g->lock);
        stamp(c, shader < 0 ? SH_COUNT : shader);
    }
}

void tp_vk_copy(tp_vk_cmd *c, const tp_vk_buf *src, size_t src_off, const tp_vk_buf *dst, size_t dst_off, size_t n) {
    if (!n) return;
    VkBufferCopy r = { src_off, dst_off, n };
    tp_vk.vkCmdCopyBuffer(c->cb, src->buf, dst->buf, 1, &r);
    stamp(c, SH_COUNT);
}

static int transfer(tp_gpu *g, tp_vk_buf *dev, size_t off, void *host, size_t n, bool up, char *err) {
    if (dev->map) {
        if (up) memcpy((char *)dev->map + off, host, n);
        else memcpy(host, (const char *)dev->map + off, n);
        return 0;
    }
    tp_vk_buf st;
    size_t chunk = n < STAGING_CHUNK ? n : STAGING_CHUNK;
    if (tp_vk_buf_new(g, &st, chunk, TP_GPU_MEM_STAGING, true, err)) return -1;
    tp_vk_cmd c;
    if (tp_vk_cmd_init(g, &c, err)) { tp_vk_buf_free(g, &st); return -1; }
    int rc = 0;
    for (size_t done = 0; done < n && !rc; done += chunk) {
        size_t m = n - done < chunk ? n - done : chunk;
        if (up) memcpy(st.map, (const char *)host + done, m);
        tp_vk_cmd_begin(&c);
        if (up) tp_vk_copy(&c, &st, 0, dev, off + done, m);
        else tp_vk_copy(&c, dev, off + done, &st, 0, m);
        rc = tp_vk_cmd_submit(&c, err);
        if (!rc && !up) memcpy((char *)host + done, st.map, m);
    }
    tp_vk_cmd_free(&c);
    tp_vk_buf_free(g, &st);
    return rc;
}

int tp_vk_upload(tp_gpu *g, tp_vk_buf *dst, size_t off, const void *src, size_t n, char *err) {
    return transfer(g, dst, off, (void *)src, n, true, err);
}

int tp_vk_download(tp_gpu *g, const tp_vk_buf *src, size_t off, void *dst, size_t n, char *err) {
    return transfer(g, (tp_vk_buf *)src, off, dst, n, false, err);
}

#endif /* TEMPO_VULKAN */
