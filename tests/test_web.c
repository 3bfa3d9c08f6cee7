/* test_web.c: the TEMPO explorer page (web/, served by `tempo serve` at /).
 *
 * The page is JavaScript, so its tests are node scripts; these TESTs run them and fail with their
 * output. They need node (20.19 or newer, for Vite) and web/node_modules (`npm ci --prefix web`,
 * which .ci/run does); the end-to-end test also needs Debian's chromium. Each one says which is
 * missing instead of failing obscurely.
 *
 *   web_bundle_is_fresh   web/dist (committed, embedded into build/tempo) is byte for byte what
 *                         its sources build: `make web` was run and its output committed
 *   web_unit              web/test/: option table = the CLI's, texts = the engine's, graph
 *                         structure and layout, on real stories260K records
 *   web_explorer_e2e      web/e2e/: headless chromium against `tempo serve --port 0`
 *                         (screenshots in build/screenshots/)
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>

/* Print the last part of a node run's output (the failures are at the end). */
static void show_tail(const char *out) {
    if (!out) return;
    size_t n = strlen(out);
    const char *from = n > 6000 ? out + n - 6000 : out;
    fprintf(stderr, "---- output%s ----\n%s\n---- end ----\n", from == out ? "" : " (last 6000 bytes)", from);
}

/* node, at a version Vite 8 runs on, and the packages of web/package-lock.json installed. */
static int web_tools_ready(void) {
    int st;
    char *v = test_run_capture("node -e 'const [a, b] = process.versions.node.split(\".\").map(Number);"
                               " process.stdout.write(a > 20 || (a === 20 && b >= 19) ? \"ok\" : process.version)'"
                               " 2>/dev/null",
                               &st);
    int ok = 1;
    if (st != 0 || !v || !*v) {
        test_fail_at(__FILE__, __LINE__, "node is not installed: install Node.js 20.19+ and npm (.ci/run does), "
                                         "then run: npm ci --prefix web");
        ok = 0;
    } else if (strcmp(v, "ok") != 0) {
        test_fail_at(__FILE__, __LINE__, "node %s is too old for the page's build tools: Node.js 20.19+ is needed", v);
        ok = 0;
    } else {
        char *m = test_run_capture("test -x web/node_modules/.bin/vite && test -d web/node_modules/playwright-core", &st);
        free(m);
        if (st != 0) {
            test_fail_at(__FILE__, __LINE__, "web/node_modules is missing or incomplete: run npm ci --prefix web");
            ok = 0;
        }
    }
    free(v);
    return ok;
}

TEST(web_bundle_is_fresh) {
    if (!web_tools_ready()) return;
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd web && node_modules/.bin/vite build --outDir '%s/dist' --emptyOutDir --logLevel error 2>&1"
             " && diff -r dist '%s/dist' 2>&1",
             dir, dir);
    int st;
    char *out = test_run_capture(cmd, &st);
    CHECK_MSG(st == 0, "web/dist is not what web/src builds: run `make web` and commit web/dist");
    if (st != 0) show_tail(out);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    out = test_run_capture(cmd, &st);
    free(out);
    free(dir);
}

TEST(web_unit) {
    if (!web_tools_ready()) return;
    int st;
    char *out = test_run_capture("cd web && node --test test/*.test.js 2>&1", &st);
    CHECK_MSG(st == 0, "web unit tests failed (cd web && npm test)");
    if (st != 0) show_tail(out);
    free(out);
}

TEST(web_explorer_e2e) {
    if (!web_tools_ready()) return;
    int st;
    char *out = test_run_capture("test -x \"${CHROMIUM:-/usr/bin/chromium}\"", &st);
    free(out);
    if (st != 0) {
        test_fail_at(__FILE__, __LINE__, "chromium not found at ${CHROMIUM:-/usr/bin/chromium}: "
                                         "install Debian's chromium (apt-get install chromium; .ci/run does)");
        return;
    }
    /* TEMPO_BIN (the sanitized build under make test) is the server the browser talks to. */
    out = test_run_capture("cd web && node --test e2e/ 2>&1", &st);
    CHECK_MSG(st == 0, "explorer end-to-end tests failed (cd web && node --test e2e/)");
    if (st != 0) show_tail(out);
    free(out);
}
