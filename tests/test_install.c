/* test_install.c: what a program embedding tempo sees: the libraries' exported symbols, and a
 * `make install` into a temporary prefix used through pkg-config, as a user would. */
#include "test.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tempo.h"

#define STORIES SHARED_DIR "/models/stories260K.gguf"

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

/* Check every global defined symbol `nm` lists: each must start with one of the prefixes.
 * Returns how many symbols were read (so a broken nm cannot pass as "no bad symbol"). */
static int check_symbols(const char *cmd, const char *const *prefixes, const char *want) {
    int st;
    char *out = test_run_capture(cmd, &st);
    if (!out) return 0;
    CHECK_MSG(st == 0, "%s: exit %d", cmd, st);
    int n = 0;
    bool found = false;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char type, name[256];
        /* "0000000000001234 T tempo_generate"; archive member headers ("x.o:") have one field */
        if (sscanf(line, "%*s %c %255s", &type, name) != 2) continue;
        n++;
        if (!strcmp(name, want)) found = true;
        bool ok = false;
        for (const char *const *p = prefixes; *p; p++) ok |= starts_with(name, *p);
        CHECK_MSG(ok, "%s: global symbol '%s' (type %c) has no tempo_ prefix: make it static or rename it", cmd,
                  name, type);
    }
    CHECK_MSG(found, "%s: %s not among the %d symbols", cmd, want, n);
    free(out);
    return n;
}

/* Item 6: public symbols start with tempo_, internal ones with tp_ (static library only); the
 * shared library exports exactly the API of include/tempo.h. */
TEST(install_library_symbols_prefixed) {
    static const char *const any[] = { "tempo_", "tp_", NULL }, *const public_only[] = { "tempo_", NULL };
    CHECK(check_symbols("nm -g --defined-only build/libtempo.a", any, "tempo_generate") > 100);
    int exported = check_symbols("nm -D --defined-only build/libtempo.so", public_only, "tempo_session_step");

    /* Every TEMPO_API function of the header is exported, and nothing else is. */
    FILE *h = fopen("include/tempo.h", "r");
    REQUIRE(h);
    char line[512];
    int declared = 0;
    while (fgets(line, sizeof line, h)) {
        char *api = strstr(line, "TEMPO_API "), *paren = api ? strchr(api, '(') : NULL;
        if (!paren || strstr(line, "#define")) continue;
        char *end = paren, *start = paren;
        while (start > api && (start[-1] == '_' || (start[-1] >= 'a' && start[-1] <= 'z') ||
                               (start[-1] >= '0' && start[-1] <= '9')))
            start--;
        char cmd[320];
        snprintf(cmd, sizeof cmd, "nm -D --defined-only build/libtempo.so | grep -qw '%.*s'", (int)(end - start), start);
        int st;
        free(test_run_capture(cmd, &st));
        CHECK_MSG(st == 0, "%.*s is declared TEMPO_API but not exported by build/libtempo.so", (int)(end - start), start);
        declared++;
    }
    fclose(h);
    CHECK_MSG(declared > 50 && declared == exported, "tempo.h declares %d TEMPO_API functions, libtempo.so exports %d",
              declared, exported);

    int st;
    char *soname = test_run_capture("readelf -d build/libtempo.so | grep SONAME", &st);
    CHECK_MSG(soname && strstr(soname, "[libtempo.so.0]"), "soname: '%s'", soname ? soname : "");
    free(soname);
    char *links = test_run_capture("readlink build/libtempo.so build/libtempo.so.0", &st);
    CHECK_MSG(links && !strcmp(links, "libtempo.so." TEMPO_VERSION "\nlibtempo.so." TEMPO_VERSION "\n"), "links: '%s'",
              links ? links : "");
    free(links);
}

/* Item 6: `make install PREFIX=... DESTDIR=...`, then examples/embed.c built with
 * `pkg-config --cflags --libs tempo` against the installed shared library, run on stories260K. */
TEST(install_prefix_then_pkg_config_builds_example) {
    char *dir = test_tmpdir();
    REQUIRE(dir);
    char cmd[4096], root[512];
    int st;
    /* The staged layout: files under DESTDIR + PREFIX, paths inside them naming PREFIX only. */
    snprintf(root, sizeof root, "%s/opt/tempo", dir);
    /* A make of its own: not the jobserver of the `make test` that may be running this. */
    snprintf(cmd, sizeof cmd, "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s install PREFIX=/opt/tempo DESTDIR=%s 2>&1",
             dir);
    char *out = test_run_capture(cmd, &st);
    CHECK_MSG(st == 0, "make install: %s", out ? out : "");
    free(out);
    static const char *const files[] = { "bin/tempo", "include/tempo.h", "lib/libtempo.a", "lib/libtempo.so",
                                         "lib/libtempo.so.0", "lib/libtempo.so." TEMPO_VERSION,
                                         "lib/pkgconfig/tempo.pc" };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(cmd, sizeof cmd, "test -e %s/%s", root, files[i]);
        free(test_run_capture(cmd, &st));
        CHECK_MSG(st == 0, "make install did not install %s", files[i]);
    }
    snprintf(cmd, sizeof cmd, "cat %s/lib/pkgconfig/tempo.pc", root);
    char *pc = test_run_capture(cmd, &st);
    REQUIRE(pc);
    CHECK_MSG(strstr(pc, "prefix=/opt/tempo\n") && strstr(pc, "Version: " TEMPO_VERSION "\n") && !strstr(pc, dir),
              "tempo.pc must name the prefix, not the staging DESTDIR: '%s'", pc);
    free(pc);
    snprintf(cmd, sizeof cmd, "%s/bin/tempo --version", root);
    out = test_run_capture(cmd, &st);
    CHECK_MSG(st == 0 && out && !strcmp(out, "tempo " TEMPO_VERSION "\n"), "installed tempo --version: '%s'", out);
    free(out);

    /* The .pc describes /opt/tempo; PKG_CONFIG_SYSROOT_DIR maps it to where DESTDIR staged it. */
    char pkg[1024];
    snprintf(pkg, sizeof pkg, "PKG_CONFIG_PATH=%s/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=%s pkg-config", root, dir);
    /* the project's own warning flags: the installed header must compile clean under them */
    snprintf(cmd, sizeof cmd, "cc -std=c11 -Wall -Wextra -Wno-unused-parameter -Werror -o %s/embed examples/embed.c "
                              "$(%s --cflags --libs tempo) 2>&1",
             dir, pkg);
    out = test_run_capture(cmd, &st);
    CHECK_MSG(st == 0, "%s\n%s", cmd, out ? out : "");
    free(out);
    /* Linked against the shared library (by its soname), loaded from the temporary prefix. */
    snprintf(cmd, sizeof cmd, "readelf -d %s/embed | grep NEEDED", dir);
    out = test_run_capture(cmd, &st);
    CHECK_MSG(out && strstr(out, "[libtempo.so.0]"), "embed is not linked to libtempo.so.0: '%s'", out ? out : "");
    free(out);
    snprintf(cmd, sizeof cmd, "LD_TRACE_LOADED_OBJECTS=1 LD_LIBRARY_PATH=%s/lib %s/embed", root, dir);
    out = test_run_capture(cmd, &st);
    char want[1024];
    snprintf(want, sizeof want, "libtempo.so.0 => %s/lib/libtempo.so.0", root);
    CHECK_MSG(out && strstr(out, want), "embed loads: %s", out ? out : "");
    free(out);

    snprintf(cmd, sizeof cmd, "LD_LIBRARY_PATH=%s/lib %s/embed " STORIES, root, dir);
    out = test_run_capture(cmd, &st);
    REQUIRE(out);
    CHECK_INT_EQ(st, 0);
    CHECK_MSG(starts_with(out, "Once upon a time, there was a little") && strstr(out, "\nclean: Once upon a time") &&
                  strstr(out, "\n24 steps, ") && strstr(out, "stop: max_tokens\n"),
              "installed embed printed '%s'", out);
    /* The same program as the statically linked example the suite builds: the same output. */
    const char *example = getenv("TEMPO_EXAMPLE_BIN");
    if (example && *example) {
        snprintf(cmd, sizeof cmd, "%s " STORIES, example);
        char *ref = test_run_capture(cmd, &st);
        CHECK_MSG(ref && !strcmp(out, ref), "shared '%s' vs static '%s'", out, ref ? ref : "");
        free(ref);
    }
    free(out);

    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    free(test_run_capture(cmd, &st));
    free(dir);
}
