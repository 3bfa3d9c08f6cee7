/* test_fuzz_replay.c: every fuzz harness of tests/fuzz/ (built with gcc's
 * ASan + UBSan and a replaying main, see the Makefile) runs over its seed
 * corpus and every regression input ever found, so a fixed crash stays fixed
 * without clang. A harness is any directory of tests/fuzz/corpus/. */
#include "test.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

TEST(fuzz_seeds_and_regressions_replay_clean) {
    DIR *d = opendir("tests/fuzz/corpus");
    REQUIRE(d);
    struct dirent *e;
    int harnesses = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char bin[512], cmd[2048];
        snprintf(bin, sizeof bin, "build/asan/fuzz/fuzz_%s", e->d_name);
        struct stat st;
        CHECK_MSG(stat(bin, &st) == 0, "%s is not built (make test builds it)", bin);
        if (stat(bin, &st) != 0) continue;
        snprintf(cmd, sizeof cmd, "%s tests/fuzz/corpus/%s tests/fuzz/regressions/%s 2>&1", bin, e->d_name, e->d_name);
        int status;
        char *out = test_run_capture(cmd, &status);
        int n = 0;
        const char *r = out ? strstr(out, "replayed ") : NULL;
        if (r) n = atoi(r + 9);
        CHECK_MSG(status == 0 && n > 0, "%s: status %d, output:\n%s", e->d_name, status, out ? out : "");
        fprintf(stderr, "  %-16s %d inputs\n", e->d_name, n);
        free(out);
        harnesses++;
    }
    closedir(d);
    CHECK(harnesses >= 7);
}
