/* measure.h: peak memory of a command, measured by the kernel, and the bench's memory table.
 * Tools for tests and the benchmark (not in the library). */
#ifndef TEMPO_TOOLS_MEASURE_H
#define TEMPO_TOOLS_MEASURE_H

#include <stddef.h>
#include <stdio.h>

#include "kv/kvcache.h"

/* Run `cmd` through /bin/sh as a child process and report its peak resident
 * set, measured by the kernel (VmHWM read when the process stops at exit, under
 * ptrace; not reported by the child), and exit status (-1 when it did not exit
 * normally). `cmd` should start with "exec " so the shell becomes the program.
 * 0, or -1 with err. */
int tp_memory_run_measured(const char *cmd, size_t *peak_bytes, int *exit_status, char *err);

/* For make bench: the measured peak of real runs next to the estimate.
 * For each (max_tokens, width) pair runs
 *   bin --model model_path --max-tokens T --max-parallel-tokens W --selection-threshold 0 <extra_args>
 * (threshold 0: every step holds exactly W members, the worst case the estimate
 * is for), measures its peak resident set (kernel-reported) and prints one row:
 *   max_tokens width slots estimate_GB peak_GB peak/estimate stop seconds
 * The estimate is tp_memory_predict_run_bytes with "other" (runtime, tokenizer)
 * taken from a 1-step run of the same file. 0, or -1 with err. */
int tp_memory_bench(const char *bin, const char *model_path, const char *extra_args, tp_kv_type kv_type,
                    const int *max_tokens, int n_max_tokens, const int *widths, int n_widths, FILE *out, char *err);

#endif
