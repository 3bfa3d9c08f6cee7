/* threadpool.c: persistent workers woken by a generation counter.
 *
 * Protocol. tp_pool_run publishes (fn, ctx) in plain fields, then bumps the
 * atomic `gen` with release order; a worker that observes the new generation
 * (acquire) therefore sees fn/ctx. Each worker bumps `done` (release) when its
 * share is finished; the caller waits for done == n_threads - 1 (acquire), so
 * every write made by fn is visible to the caller afterwards and the next run
 * may overwrite fn/ctx safely.
 *
 * Waiting. A forward pass calls the pool ~10 times per layer, a few
 * microseconds apart, so a futex sleep/wake per call would cost more than the
 * work. Workers spin on `gen` (with a pause hint) for up to ~SPIN_NS, and only
 * then sleep on a condition variable. The runner signals the condition only
 * when some worker announced that it is going to sleep (`n_sleep`); the worker
 * re-checks `gen` under the mutex after announcing, so a wake-up cannot be
 * lost (both sides use sequentially consistent accesses on gen and n_sleep).
 * When there are more threads than online cores, spinning would steal the
 * cores from the threads doing the work, so workers yield while spinning.
 */
#include "kernels/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
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

struct worker_arg {
    struct tp_pool *pool;
    int ith;
};

struct tp_pool {
    int n_threads;
    int oversubscribed; /* more threads than online cores */
    pthread_t *threads; /* n_threads - 1 workers */
    struct worker_arg *args;

    /* the job of the current generation (written only while workers are idle) */
    tp_task_fn fn;
    void *ctx;

    _Alignas(64) atomic_uint gen;
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

/* Wait until pool->gen != seen; returns the new generation. */
static unsigned wait_for_gen(struct tp_pool *p, unsigned seen) {
    long long deadline = 0;
    for (unsigned i = 0;; i++) {
        unsigned g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen) return g;
        CPU_RELAX();
        if (p->oversubscribed) sched_yield();
        if ((i & 255) != 255) continue;
        /* check the clock only now and then */
        long long t = now_ns();
        if (!deadline) deadline = t + SPIN_NS;
        if (t < deadline) continue;
        pthread_mutex_lock(&p->mu);
        atomic_fetch_add(&p->n_sleep, 1);
        while ((g = atomic_load(&p->gen)) == seen) pthread_cond_wait(&p->cv, &p->mu);
        atomic_fetch_sub(&p->n_sleep, 1);
        pthread_mutex_unlock(&p->mu);
        atomic_thread_fence(memory_order_acquire);
        return g;
    }
}

static void *worker_main(void *arg) {
    struct worker_arg *wa = arg;
    struct tp_pool *p = wa->pool;
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_gen(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        p->fn(p->ctx, wa->ith, p->n_threads);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
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

tp_pool *tp_pool_create(int n_threads) {
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1) online = 1;
    if (n_threads <= 0) n_threads = (int)online;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    struct tp_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads;
    p->oversubscribed = n_threads > online;
    atomic_init(&p->gen, 0);
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
        p->args[i].ith = i + 1;
        if (pthread_create(&p->threads[i], NULL, worker_main, &p->args[i]) != 0) {
            p->n_threads = i + 1; /* the workers started so far */
            tp_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void tp_pool_free(tp_pool *p) {
    if (!p) return;
    int nw = p->n_threads - 1;
    if (nw > 0) {
        atomic_store(&p->stop, 1);
        atomic_fetch_add(&p->gen, 1); /* seq_cst: pairs with the sleepers' check */
        wake_sleepers(p);
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
    atomic_fetch_add(&p->gen, 1); /* seq_cst: publishes fn/ctx/done and orders with n_sleep */
    wake_sleepers(p);
    fn(ctx, 0, p->n_threads);
    int want = p->n_threads - 1;
    for (unsigned i = 0; atomic_load_explicit(&p->done, memory_order_acquire) != want; i++) {
        CPU_RELAX();
        if (p->oversubscribed || i > (1u << 16)) sched_yield();
    }
}
