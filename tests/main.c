/* main.c: the test runner: runs every registered TEST, prints "N passed, N failed". */
#include "test.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TESTS 1024
static struct { const char *name; test_fn fn; } tests[MAX_TESTS];
static int n_tests;
int test_current_failed;
static const char *current_name;

void test_register(const char *name, test_fn fn) {
    if (n_tests < MAX_TESTS) { tests[n_tests].name = name; tests[n_tests].fn = fn; n_tests++; }
}

void test_fail_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "  FAIL %s (%s:%d): ", current_name, file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    test_current_failed++;
}

static int cmp_tests(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    qsort(tests, (size_t)n_tests, sizeof tests[0], cmp_tests);
    int passed = 0, failed = 0;
    for (int i = 0; i < n_tests; i++) {
        if (filter && *filter && !strstr(tests[i].name, filter)) continue;
        current_name = tests[i].name;
        test_current_failed = 0;
        fprintf(stderr, "[ RUN  ] %s\n", tests[i].name);
        tests[i].fn();
        if (test_current_failed) { failed++; fprintf(stderr, "[ FAIL ] %s\n", tests[i].name); }
        else { passed++; fprintf(stderr, "[  OK  ] %s\n", tests[i].name); }
    }
    fflush(stderr);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
