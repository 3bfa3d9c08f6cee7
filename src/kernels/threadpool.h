/* threadpool.h: a fixed pool of worker threads for data-parallel kernels.
 *
 * tp_pool_run(pool, fn, ctx, n) calls fn(ctx, i, n) once for every thread index
 * i in [0, n_threads) and returns when all have finished. The caller's thread
 * takes part (index 0). Workers spin briefly then sleep, so a per-token forward
 * pass does not pay a futex wake-up per matmul. No allocation after create.
 */
#ifndef TEMPO_THREADPOOL_H
#define TEMPO_THREADPOOL_H

typedef struct tp_pool tp_pool;
typedef void (*tp_task_fn)(void *ctx, int ith, int nth);

tp_pool *tp_pool_create(int n_threads); /* n_threads <= 0: all online cores */
void tp_pool_free(tp_pool *pool);
int tp_pool_threads(const tp_pool *pool);
void tp_pool_run(tp_pool *pool, tp_task_fn fn, void *ctx);

#endif
