/* test.h: the project's small test runner.
 *
 *   TEST(gguf_reads_header) { CHECK(x == 3); CHECK_NEAR(a, b, 1e-4); }
 *
 * Each TEST registers itself at start-up; build/asan/test_tempo runs them all
 * (or those whose name contains argv[1]) and ends with "N passed, N failed".
 * A CHECK that fails prints file:line and the expression and marks the test
 * failed; the test goes on (use REQUIRE to stop the test instead).
 * Tests read real data from ../shared/ (SHARED_DIR).
 */
#ifndef TEMPO_TEST_H
#define TEMPO_TEST_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>

#define SHARED_DIR "../shared"

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn);
extern int test_current_failed;
void test_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TEST(name)                                                             \
    static void test_##name(void);                                             \
    __attribute__((constructor)) static void test_reg_##name(void) {           \
        test_register(#name, test_##name);                                     \
    }                                                                          \
    static void test_##name(void)

#define CHECK(cond)                                                            \
    do { if (!(cond)) test_fail_at(__FILE__, __LINE__, "CHECK(%s)", #cond); } while (0)
#define CHECK_MSG(cond, ...)                                                   \
    do { if (!(cond)) test_fail_at(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define REQUIRE(cond)                                                          \
    do { if (!(cond)) { test_fail_at(__FILE__, __LINE__, "REQUIRE(%s)", #cond); return; } } while (0)
#define CHECK_NEAR(a, b, tol)                                                  \
    do { double a_ = (a), b_ = (b);                                            \
         if (!(fabs(a_ - b_) <= (tol)))                                        \
             test_fail_at(__FILE__, __LINE__, "CHECK_NEAR(%s, %s): %.9g vs %.9g (tol %g)", \
                          #a, #b, a_, b_, (double)(tol)); } while (0)
#define CHECK_INT_EQ(a, b)                                                     \
    do { long long a_ = (a), b_ = (b);                                         \
         if (a_ != b_) test_fail_at(__FILE__, __LINE__, "%s == %s: %lld vs %lld", #a, #b, a_, b_); } while (0)

/* Tests that run on every backend: BACKEND_TEST(name) { ... } registers `name` (the CPU) and
 * `name_gpu` (the Vulkan device of test_gpu_device(), skipped with a message when there is none).
 * The body reads test_backend: NULL for the CPU, else the device value ("gpu:0") to open with. */
extern const char *test_backend;
#define BACKEND_TEST(name)                                                          \
    static void name##_on(void);                                                    \
    TEST(name) { test_backend = NULL; name##_on(); }                                \
    TEST(name##_gpu) {                                                              \
        test_backend = test_gpu_device();                                           \
        if (!test_backend) { fprintf(stderr, "  skipped: no Vulkan device\n"); return; } \
        name##_on();                                                                \
        test_backend = NULL;                                                        \
    }                                                                               \
    static void name##_on(void)

/* Helpers shared by tests (tests/util.c) */
/* Run a shell command, capture stdout (malloc'ed) and the exit status. */
char *test_run_capture(const char *cmd, int *status);
/* The CLI binary under test (env TEMPO_BIN, default build/asan/tempo). */
const char *test_tempo_bin(void);
/* Parse a line of space-separated ints; returns count. */
int test_parse_ints(const char *s, int *out, int cap);
/* llama.cpp's greedy ids for stories260K and "Once upon a time" (64 tokens, from
 * ../shared/models/reference); returns the count, 0 when the file is missing. */
int test_reference_greedy_ids(int *out, int cap);
/* A fresh temporary directory (malloc'ed path). */
char *test_tmpdir(void);
/* The Vulkan device GPU tests run on, as a device value ("gpu:0"): the best usable hardware GPU,
 * else a software one (lavapipe). NULL when there is no Vulkan device or tempo was built without
 * the backend: the caller says so and skips. test_gpu_index: its index, or -1. */
const char *test_gpu_device(void);
int test_gpu_index(void);

/* tp_forward with a compute context made for the call (2 threads). */
#include "model/model.h"
int test_forward(tp_model *m, tp_kv *kv, const tp_batch *b, char *err);

/* stories260K as a Hugging Face folder in dir (F32 safetensors, config.json, a
 * stand-in byte-level tokenizer.json of 512 tokens); tests/test_hf.c. */
bool test_export_stories_hf(const char *dir);

#endif
