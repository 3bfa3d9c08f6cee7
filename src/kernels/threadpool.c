/* threadpool.c: persistent workers woken by a generation counter.
 *
 * Protocol. One 64-bit atomic word `ctl` holds the run's generation (high 32
 * bits), a CLOSED flag and the number of workers that joined the run (low
 * bits). tp_pool_run publishes (fn, ctx) in plain fields and then stores a new
 * generation with release order. A worker that observes it (acquire) joins by
 * a CAS that increments the count, only while the generation is the one it saw
 * and the run is not closed; the count it got gives its index (1, 2, ...).
 * When the caller has finished its own share (index 0) it closes the run; the
 * indices nobody joined for are then run by the caller itself, so a worker
 * that the OS has not scheduled (an oversubscribed machine) does not stall the
 * product. The caller finally waits until every joined worker has bumped
 * `done` (release/acquire), so all writes made by fn are visible to it, and
 * no worker touches fn/ctx after tp_pool_run returns: fn is called exactly once
 * for every index in [0, n_threads), on some thread.
 *
 * Waiting. A forward pass calls the pool ~10 times per layer, a few
 * microseconds apart, so a futex sleep/wake per call would cost more than the
 * work. Workers spin on `ctl` (with a pause hint) for up to ~SPIN_NS, and only
 * then sleep on a condition variable. The runner signals the condition only
 * when some worker announced that it is going to sleep (`n_sleep`); the worker
 * re-checks `ctl` under the mutex after announcing, so a wake-up cannot be
 * lost (both sides use sequentially consistent accesses on ctl and n_sleep).
 * Size. A pool never has more threads than the CPUs this process may run on
 * (its affinity mask): extra threads could only take turns on the same cores,
 * and a worker preempted in the middle of its share holds up the run until
 * the OS schedules it again (a time slice, far longer than a matmul), so
 * --threads above the core count would be slower, never faster. Other
 * processes may still take the cores (a shared machine): a worker that has
 * not joined a run by the time the caller is done does not delay it (above),
 * and the matmul hands out small chunks, so one that is preempted mid-run
 * holds up at most one chunk.
 */
#include "kernels/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

#define SPIN_NS 200000LL /* how long an idle worker spins before sleeping */
#define MAX_THREADS 512
#define CTL_CLOSED (1ULL << 31)
#define CTL_JOINED 0x7FFFFFFFULL
#define CTL_GEN(c) ((uint32_t)((c) >> 32))

struct worker_arg {
    struct tp_pool *pool;
};

struct tp_pool {
    int n_threads;
    pthread_t *threads; /* n_threads - 1 workers */
    struct worker_arg *args;

    /* the job of the current generation (written only while no worker uses it) */
    tp_task_fn fn;
    void *ctx;

    _Alignas(64) _Atomic unsigned long long ctl;
    _Alignas(64) atomic_int done;
    _Alignas(64) atomic_int n_sleep;
    atomic_int stop;

    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Wait until the generation in ctl differs from `seen`; returns ctl. */
static unsigned long long wait_for_gen(struct tp_pool *p, uint32_t seen) {
    long long deadline = 0;
    for (unsigned i = 0;; i++) {
        unsigned long long c = atomic_load_explicit(&p->ctl, memory_order_acquire);
        if (CTL_GEN(c) != seen) return c;
        CPU_RELAX();
        if ((i & 255) != 255) continue;
        /* check the clock only now and then */
        long long t = now_ns();
        if (!deadline) deadline = t + SPIN_NS;
        if (t < deadline) continue;
        pthread_mutex_lock(&p->mu);
        atomic_fetch_add(&p->n_sleep, 1);
        while (CTL_GEN(c = atomic_load(&p->ctl)) == seen) pthread_cond_wait(&p->cv, &p->mu);
        atomic_fetch_sub(&p->n_sleep, 1);
        pthread_mutex_unlock(&p->mu);
        return c; /* the seq_cst load above also acquires */
    }
}

static void *worker_main(void *arg) {
    struct tp_pool *p = ((struct worker_arg *)arg)->pool;
    uint32_t seen = 0;
    for (;;) {
        unsigned long long c = wait_for_gen(p, seen);
        seen = CTL_GEN(c);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        /* join this generation's run unless the caller closed it */
        while (CTL_GEN(c) == seen && !(c & CTL_CLOSED)) {
            if (atomic_compare_exchange_weak_explicit(&p->ctl, &c, c + 1, memory_order_acquire,
                                                      memory_order_acquire)) {
                int ith = (int)(c & CTL_JOINED) + 1;
                p->fn(p->ctx, ith, p->n_threads);
                atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
                break;
            }
        }
    }
    return NULL;
}

static void wake_sleepers(struct tp_pool *p) {
    if (atomic_load(&p->n_sleep) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

/* CPUs this process may run on: its affinity mask, else the online count. */
static long usable_cpus(void) {
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
#endif
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online < 1 ? 1 : online;
}

tp_pool *tp_pool_create(int n_threads) {
    long online = usable_cpus();
    if (n_threads <= 0 || n_threads > online) n_threads = (int)online;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    struct tp_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads;
    atomic_init(&p->ctl, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->n_sleep, 0);
    atomic_init(&p->stop, 0);
    if (pthread_mutex_init(&p->mu, NULL) != 0) { free(p); return NULL; }
    if (pthread_cond_init(&p->cv, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    int nw = n_threads - 1;
    if (nw > 0) {
        p->threads = calloc((size_t)nw, sizeof *p->threads);
        p->args = calloc((size_t)nw, sizeof *p->args);
        if (!p->threads || !p->args) { p->n_threads = 1; tp_pool_free(p); return NULL; }
    }
    for (int i = 0; i < nw; i++) {
        p->args[i].pool = p;
        if (pthread_create(&p->threads[i], NULL, worker_main, &p->args[i]) != 0) {
            p->n_threads = i + 1; /* the workers started so far */
            tp_pool_free(p);
            return NULL;
        }
    }
    return p;
}

/* Start a new generation (closed at once when stopping). seq_cst: publishes
 * fn/ctx/done and orders with the sleepers' n_sleep. */
static void new_generation(struct tp_pool *p, unsigned long long flags) {
    unsigned long long c = atomic_load_explicit(&p->ctl, memory_order_relaxed);
    atomic_store(&p->ctl, ((unsigned long long)(CTL_GEN(c) + 1) << 32) | flags);
    wake_sleepers(p);
}

void tp_pool_free(tp_pool *p) {
    if (!p) return;
    int nw = p->n_threads - 1;
    if (nw > 0) {
        atomic_store(&p->stop, 1);
        new_generation(p, CTL_CLOSED);
        for (int i = 0; i < nw; i++) pthread_join(p->threads[i], NULL);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->args);
    free(p);
}

int tp_pool_threads(const tp_pool *p) { return p ? p->n_threads : 1; }

void tp_pool_run(tp_pool *p, tp_task_fn fn, void *ctx) {
    if (!p || p->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    new_generation(p, 0);
    fn(ctx, 0, p->n_threads);
    /* close the run; the shares of workers that have not joined are ours */
    unsigned long long c = atomic_fetch_or_explicit(&p->ctl, CTL_CLOSED, memory_order_acq_rel);
    int joined = (int)(c & CTL_JOINED);
    for (int ith = joined + 1; ith < p->n_threads; ith++) fn(ctx, ith, p->n_threads);
    for (unsigned i = 0; atomic_load_explicit(&p->done, memory_order_acquire) != joined; i++) {
        CPU_RELAX();
        if (i > (1u << 16)) sched_yield();
    }
}
