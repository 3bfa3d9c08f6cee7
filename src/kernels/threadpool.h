/* threadpool.h: a fixed pool of worker threads for data-parallel kernels.
 *
 * tp_pool_run(pool, fn, ctx) calls fn(ctx, i, n) once for every thread index
 * i in [0, n) (n = tp_pool_threads(pool)) and returns when all have finished;
 * everything fn wrote is then visible to the caller. The caller's thread takes
 * part (index 0). Workers spin briefly (~0.2 ms) then sleep on a condition
 * variable, so a per-token forward pass does not pay a futex wake-up per
 * matmul. No allocation after create. A NULL pool runs fn(ctx, 0, 1).
 * Index i is a share of the work, not an OS thread: when a worker has not
 * picked up the run by the time the caller finished share 0 (a busy machine),
 * the caller runs that share itself, after its own. Per-index scratch buffers
 * are fine; thread-local state keyed by i is not.
 * tp_pool_run is not re-entrant: fn must not call tp_pool_run on the same pool,
 * and only one thread may drive a pool at a time.
 */
#ifndef TEMPO_THREADPOOL_H
#define TEMPO_THREADPOOL_H

typedef struct tp_pool tp_pool;
typedef void (*tp_task_fn)(void *ctx, int ith, int nth);

/* n_threads <= 0: all CPUs this process may run on; more than that is capped
 * to it (extra threads would only compete for the same cores). */
tp_pool *tp_pool_create(int n_threads);
void tp_pool_free(tp_pool *pool);
int tp_pool_threads(const tp_pool *pool);
void tp_pool_run(tp_pool *pool, tp_task_fn fn, void *ctx);

#endif
