# tempo: GNU Make build.
#   make          build/tempo (CLI), build/libtempo.a and build/libtempo.so (library)
#   make test     every test, built with AddressSanitizer + UBSan (and -Werror), then test-faults
#                 (allocation failures), test-tsan and test-python
#   make test-python  the Python binding's tests (python/tests) with Debian's python3
#   make bench    speed and memory benchmark (random-weight 1B-shape files)
#   make run      build and generate from a small real model
#   make serve    the same model behind `tempo serve`: the TEMPO explorer at http://127.0.0.1:8765/
#   make web      rebuild the explorer's committed bundle web/dist from web/src (needs Node and npm)
#   make fuzz     every libFuzzer harness of tests/fuzz/ for FUZZ_SECONDS each (clang)
#   make install  PREFIX=/usr/local DESTDIR= : binary, libraries, header, pkg-config file
#   make VULKAN=0 the CPU-only build (the default builds the Vulkan backend when the Vulkan headers
#                 and glslc are installed; bench/gpu.sh measures it on a GPU)
#
# CC, CFLAGS, CPPFLAGS and LDFLAGS from the command line or the environment are honoured.
# Release builds add -Werror when WERROR=1 (CI does); test builds always do.

# make's built-in default CC is "cc": replace only that default, never a CC someone set.
ifeq ($(origin CC),default)
CC := gcc
endif
CFLAGS   ?= -O2 -g
PREFIX   ?= /usr/local
LIBDIR   ?= $(PREFIX)/lib
VERSION  := 0.4.0
SOMAJOR  := 0
PKGS     := libpcre2-8 libcjson yaml-0.1
WARN     := -std=c11 -Wall -Wextra -Wno-unused-parameter
DEFS     := -D_GNU_SOURCE -Iinclude -Isrc -I.
DEPLIBS  := -lpcre2-8 -lcjson -lyaml -lpthread -lm
STRICT   := $(if $(filter 1,$(WERROR)),-Werror,)

# Library objects: position-independent, everything but the public API hidden from the shared
# library (internal tp_ symbols stay usable from the static one).
LIB_CFLAGS  := $(CFLAGS) $(WARN) $(STRICT) $(DEFS) $(CPPFLAGS) -fPIC -fvisibility=hidden -MMD -MP
OPT_CFLAGS  := $(CFLAGS) $(WARN) $(STRICT) $(DEFS) $(CPPFLAGS) -MMD -MP
TEST_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined $(WARN) -Werror $(DEFS) $(CPPFLAGS) -MMD -MP
TSAN_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=thread $(WARN) -Werror $(DEFS) $(CPPFLAGS) -MMD -MP

LIB_SRC   := $(sort $(wildcard src/*/*.c))
LIB_SRC   := $(filter-out src/cli/% src/server/%,$(LIB_SRC))
CLI_SRC   := $(sort $(wildcard src/cli/*.c))
# `tempo serve` (src/server/) is an application on the public API like the CLI: it links into
# build/tempo only, so libtempo does not depend on libmicrohttpd.
SERVER_SRC := $(sort $(wildcard src/server/*.c))
SERVER_LIBS := -lmicrohttpd
TOOLS_SRC := $(sort $(wildcard tools/*.c))
TEST_SRC  := $(sort $(wildcard tests/*.c))

LIB_OBJ        := $(LIB_SRC:%.c=build/obj/%.o)
CLI_OBJ        := $(CLI_SRC:%.c=build/obj/%.o)
TOOLS_OBJ      := $(TOOLS_SRC:%.c=build/obj/%.o)
SERVER_OBJ     := $(SERVER_SRC:%.c=build/obj/%.o) build/obj/gen/web_assets.o
ASAN_LIB_OBJ   := $(LIB_SRC:%.c=build/asan/%.o)
ASAN_CLI_OBJ   := $(CLI_SRC:%.c=build/asan/%.o)
ASAN_SERVER_OBJ := $(SERVER_SRC:%.c=build/asan/%.o) build/asan/gen/web_assets.o
ASAN_TOOLS_OBJ := $(TOOLS_SRC:%.c=build/asan/%.o)
TEST_OBJ       := $(TEST_SRC:%.c=build/asan/%.o)
# ThreadSanitizer: the library and the tests of what threads share (sessions over one model).
TSAN_TEST_SRC  := tests/main.c tests/util.c tests/test_session.c
TSAN_OBJ       := $(LIB_SRC:%.c=build/tsan/%.o) $(TSAN_TEST_SRC:%.c=build/tsan/%.o)

# ------------------------------------------------------------ Vulkan GPU backend (src/gpu) ---
# Built when the Vulkan headers (pkg-config vulkan) and glslc are present; `make VULKAN=0` forces
# the CPU-only build (src/gpu/gpu_stub.c then stands in for the backend). The compute shaders
# (src/gpu/shaders/*.comp) are compiled to SPIR-V at build time and embedded in the library as
# byte arrays (build/gen/gpu_spv.c). The Vulkan loader is opened at run time (dlopen), so a binary
# built with the backend still starts, and runs on the CPU, on machines without Vulkan.
.DEFAULT_GOAL := all
VULKAN ?= $(shell pkg-config --exists vulkan 2>/dev/null && command -v glslc >/dev/null 2>&1 && echo 1 || echo 0)
ifeq ($(VULKAN),1)
GLSLC       ?= glslc
SHADERS     := $(sort $(wildcard src/gpu/shaders/*.comp))
SPV         := $(SHADERS:src/gpu/shaders/%.comp=build/gen/spv/%.spv)
VK_CFLAGS   := -DTEMPO_VULKAN $(shell pkg-config --cflags vulkan)
LIB_CFLAGS  += $(VK_CFLAGS)
OPT_CFLAGS  += $(VK_CFLAGS)
TEST_CFLAGS += $(VK_CFLAGS)
TSAN_CFLAGS += $(VK_CFLAGS)
DEPLIBS     += -ldl
PC_LIBS     := -ldl
LIB_OBJ      += build/obj/gen/gpu_spv.o
ASAN_LIB_OBJ += build/asan/gen/gpu_spv.o
TSAN_OBJ     += build/tsan/gen/gpu_spv.o
TSAN_LIB_EXTRA := build/tsan/gen/gpu_spv.o
FUZZ_LIB_EXTRA := build/fuzz/gen/gpu_spv.o

build/gen/spv/%.spv: src/gpu/shaders/%.comp $(wildcard src/gpu/shaders/*.glsl)
	@mkdir -p $(dir $@)
	$(GLSLC) --target-env=vulkan1.2 -O -Isrc/gpu/shaders -o $@ $<

# One array per shader (4-byte aligned, as vkCreateShaderModule wants), then the table.
build/gen/gpu_spv.c: $(SPV)
	@mkdir -p $(dir $@)
	@{ echo '/* generated by make from the compute shaders in src/gpu/shaders: their SPIR-V */'; \
	  echo '#include "gpu/spv.h"'; \
	  for f in $(SPV); do n=$$(basename $$f .spv); \
	    echo "static _Alignas(4) const unsigned char spv_$$n[] = {"; \
	    od -An -v -tx1 $$f | sed 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '};'; done; \
	  echo 'const tp_spv_blob tp_spv_blobs[] = {'; \
	  for f in $(SPV); do n=$$(basename $$f .spv); echo "    { \"$$n\", spv_$$n, sizeof spv_$$n },"; done; \
	  echo '    { 0, 0, 0 },'; echo '};'; } > $@.tmp && mv $@.tmp $@

build/obj/gen/gpu_spv.o: build/gen/gpu_spv.c src/gpu/spv.h
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

build/asan/gen/gpu_spv.o: build/gen/gpu_spv.c src/gpu/spv.h
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -c $< -o $@

build/tsan/gen/gpu_spv.o: build/gen/gpu_spv.c src/gpu/spv.h
	@mkdir -p $(dir $@)
	$(CC) $(TSAN_CFLAGS) -c $< -o $@

build/fuzz/gen/gpu_spv.o: build/gen/gpu_spv.c src/gpu/spv.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(VK_CFLAGS) -c $< -o $@
endif
# The GPU benchmark (bench/gpu.sh builds and runs it).
build/gpu_bench: bench/gpu_bench.c build/libtempo_tools.a build/libtempo.a
	$(CC) $(OPT_CFLAGS) -o $@ $< build/libtempo_tools.a build/libtempo.a $(DEPLIBS)
# ------------------------------------------------------------ end of the Vulkan block --------

.PHONY: all test test-faults test-tsan test-python bench bench-spill bench-server run serve web clean deps install uninstall \
        fuzz fuzz-build fuzz-seeds
all: build/tempo build/libtempo.a build/libtempo.so build/tempo.pc

# Debian packages the build needs; `make deps` installs them (as root).
deps:
	@missing=""; for p in libpcre2-dev libcjson-dev libyaml-dev libmicrohttpd-dev pkg-config; do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    apt-get update -qq && apt-get install -y -qq $$missing; \
	  else echo "tempo needs these Debian packages:$$missing"; \
	    echo "install them with: sudo apt-get install$$missing"; exit 1; fi; fi

build/obj/src/cli/%.o: src/cli/%.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT_CFLAGS) -c $< -o $@

build/obj/src/server/%.o: src/server/%.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT_CFLAGS) -c $< -o $@

# The page served at / : every file under web/dist/ compiled in (docs/server.md). The list of
# files is a prerequisite too, so removing a file re-embeds.
WEB_FILES := $(shell find web/dist -type f 2>/dev/null | LC_ALL=C sort)
WEB_LIST  := $(shell mkdir -p build/gen && echo '$(WEB_FILES)' > build/gen/web_list.new && \
               (cmp -s build/gen/web_list.new build/gen/web_list || cp build/gen/web_list.new build/gen/web_list); \
               echo build/gen/web_list)
build/gen/web_assets.c: src/server/embed_assets.sh $(WEB_LIST) $(WEB_FILES)
	@mkdir -p $(dir $@)
	sh src/server/embed_assets.sh web/dist > $@.tmp && mv $@.tmp $@

build/obj/gen/web_assets.o: build/gen/web_assets.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT_CFLAGS) -c $< -o $@

build/asan/gen/web_assets.o: build/gen/web_assets.c
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -c $< -o $@

build/obj/tools/%.o: tools/%.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT_CFLAGS) -c $< -o $@

build/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

build/asan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -c $< -o $@

# ThreadSanitizer builds: the session tests (sessions of one model on many threads) and the binary
# (the server shares jobs, the queue and the model between threads). `make test-tsan` runs both.
build/tsan/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(TSAN_CFLAGS) -c $< -o $@

build/tsan/test_tempo: $(TSAN_OBJ)
	$(CC) $(TSAN_CFLAGS) -o $@ $(TSAN_OBJ) $(DEPLIBS)

build/tsan/tempo: $(LIB_SRC:%.c=build/tsan/%.o) $(TSAN_LIB_EXTRA) $(CLI_SRC:%.c=build/tsan/%.o) $(SERVER_SRC:%.c=build/tsan/%.o) build/tsan/gen/web_assets.o
	$(CC) $(TSAN_CFLAGS) -o $@ $^ $(DEPLIBS) $(SERVER_LIBS)

build/tsan/gen/web_assets.o: build/gen/web_assets.c
	@mkdir -p $(dir $@)
	$(CC) $(TSAN_CFLAGS) -c $< -o $@

build/libtempo.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/libtempo.so.$(VERSION): $(LIB_OBJ)
	$(CC) $(CFLAGS) -shared -Wl,-soname,libtempo.so.$(SOMAJOR) $(LDFLAGS) -o $@ $^ $(DEPLIBS)

build/libtempo.so: build/libtempo.so.$(VERSION)
	ln -sf libtempo.so.$(VERSION) build/libtempo.so.$(SOMAJOR)
	ln -sf libtempo.so.$(VERSION) $@

build/tempo.pc: Makefile
	@mkdir -p build
	printf 'prefix=%s\nlibdir=%s\nincludedir=$${prefix}/include\n\nName: tempo\nDescription: TEMPO generation for Llama-family models\nVersion: %s\nRequires.private: %s\nLibs: -L$${libdir} -ltempo\nLibs.private: -lpthread -lm$(if $(PC_LIBS), $(PC_LIBS),)\nCflags: -I$${includedir}\n' \
	  '$(PREFIX)' '$(LIBDIR)' '$(VERSION)' '$(PKGS)' > $@

build/libtempo_tools.a: $(TOOLS_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/tempo: $(CLI_OBJ) $(SERVER_OBJ) build/libtempo.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJ) $(SERVER_OBJ) build/libtempo.a $(DEPLIBS) $(SERVER_LIBS)

build/asan/libtempo.a: $(ASAN_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/asan/libtempo_tools.a: $(ASAN_TOOLS_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/asan/tempo: $(ASAN_CLI_OBJ) $(ASAN_SERVER_OBJ) build/asan/libtempo.a
	$(CC) $(TEST_CFLAGS) -o $@ $(ASAN_CLI_OBJ) $(ASAN_SERVER_OBJ) build/asan/libtempo.a $(DEPLIBS) $(SERVER_LIBS)

build/asan/test_tempo: $(TEST_OBJ) build/asan/libtempo_tools.a build/asan/libtempo.a
	$(CC) $(TEST_CFLAGS) -o $@ $(TEST_OBJ) build/asan/libtempo_tools.a build/asan/libtempo.a $(DEPLIBS)

# The allocation-failure test: every malloc/calloc/realloc/aligned_alloc/strdup of the library
# goes through the test's wrappers (ld --wrap), which fail the N-th one.
FAULT_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc,--wrap=strdup,--wrap=strndup
build/asan/test_faults: build/asan/tests/faults/test_faults.o build/asan/libtempo.a
	$(CC) $(TEST_CFLAGS) $(FAULT_WRAP) -o $@ $^ $(DEPLIBS)

# Part of `make test`: every allocation of a whole job made to fail in turn (about 40 s).
test-faults: deps build/asan/test_faults
	ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=tests/lsan.supp build/asan/test_faults

build/asan/example_embed: examples/embed.c build/asan/libtempo.a
	$(CC) $(TEST_CFLAGS) -o $@ $< build/asan/libtempo.a $(DEPLIBS)

build/bench: bench/bench.c bench/probe.h build/libtempo_tools.a build/libtempo.a
	$(CC) $(OPT_CFLAGS) -o $@ $< build/libtempo_tools.a build/libtempo.a $(DEPLIBS)

build/kernel_timing: bench/kernel_timing.c bench/probe.h build/libtempo.a
	$(CC) $(OPT_CFLAGS) -o $@ $< build/libtempo.a $(DEPLIBS)

build/bench_spill: bench/spill.c build/libtempo_tools.a build/libtempo.a
	$(CC) $(OPT_CFLAGS) -o $@ $< build/libtempo_tools.a build/libtempo.a $(DEPLIBS)

-include $(shell find build -name '*.d' 2>/dev/null)

# The tests run from the repository root and read ../shared/.
# TEMPO_BIN lets tests that drive the CLI find the sanitized binary. The fuzz
# harnesses are built with gcc's ASan too (FUZZ_REPLAY): a test replays their
# seeds and every regression case (tests/test_fuzz_replay.c).
test: deps
	$(MAKE) --no-print-directory build/asan/test_tempo build/asan/tempo build/asan/example_embed build/tempo \
	  build/libtempo.so build/tempo.pc $(FUZZ_REPLAY) $(FUZZ_SEEDS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 LSAN_OPTIONS=suppressions=tests/lsan.supp \
	TEMPO_BIN=build/asan/tempo TEMPO_RELEASE_BIN=build/tempo TEMPO_EXAMPLE_BIN=build/asan/example_embed \
	build/asan/test_tempo $(T)
	@if [ -z "$(T)" ]; then $(MAKE) --no-print-directory test-faults test-tsan test-python; fi

# Under ThreadSanitizer (any report fails the run): sessions on one model from many threads, and
# the server's tests against a TSan build of the binary.
test-tsan: deps
	$(MAKE) --no-print-directory build/tsan/test_tempo build/tsan/tempo build/asan/test_tempo build/tempo
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build/tsan/test_tempo session_
	TEMPO_BIN=build/tsan/tempo TEMPO_RELEASE_BIN=build/tempo build/asan/test_tempo server_

# The Python binding (python/) against the shared library just built. Debian's python3 by
# default: the one python3-cffi and python3-pytest install into (a pyenv python first on PATH
# has neither).
PYTHON ?= /usr/bin/python3
test-python: build/libtempo.so build/tempo
	@$(PYTHON) -c 'import cffi, pytest' 2>/dev/null || { echo "test-python: $(PYTHON) lacks cffi or pytest:" \
	  "apt-get install python3-cffi python3-pytest python3-setuptools python3-wheel python3-venv python3-pip"; exit 1; }
	TEMPO_LIBRARY=$(CURDIR)/build/libtempo.so TEMPO_RELEASE_BIN=$(CURDIR)/build/tempo PYTHONDONTWRITEBYTECODE=1 \
	  $(PYTHON) -m pytest -q -p no:cacheprovider python/tests

bench: build/bench build/tempo
	build/bench
	$(MAKE) --no-print-directory bench-spill
	$(MAKE) --no-print-directory bench-server

# The slowdown of a --kv-offload run that spills against the same run in memory (bench/spill.c).
bench-spill: build/bench_spill build/tempo
	build/bench_spill

# 8 concurrent streaming clients against one, on the bench's 1B-shape Q4_0 file (bench/server_bench.sh).
bench-server: build/bench build/tempo
	sh bench/server_bench.sh


install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 build/tempo $(DESTDIR)$(PREFIX)/bin/tempo
	install -m 644 build/libtempo.a $(DESTDIR)$(LIBDIR)/libtempo.a
	install -m 755 build/libtempo.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libtempo.so.$(VERSION)
	ln -sf libtempo.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libtempo.so.$(SOMAJOR)
	ln -sf libtempo.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libtempo.so
	install -m 644 include/tempo.h $(DESTDIR)$(PREFIX)/include/tempo.h
	sed -e 's|^prefix=.*|prefix=$(PREFIX)|' -e 's|^libdir=.*|libdir=$(LIBDIR)|' build/tempo.pc \
	  > $(DESTDIR)$(LIBDIR)/pkgconfig/tempo.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/tempo $(DESTDIR)$(LIBDIR)/libtempo.a $(DESTDIR)$(LIBDIR)/libtempo.so* \
	  $(DESTDIR)$(PREFIX)/include/tempo.h $(DESTDIR)$(LIBDIR)/pkgconfig/tempo.pc

# The small real model `make run` uses: the shared copy, else a public TinyStories GGUF.
MODEL ?= ../shared/models/stories260K.gguf
MODEL_URLS := https://huggingface.co/ggml-org/models-moved/resolve/main/tinyllamas/stories260K.gguf \
              https://huggingface.co/ggml-org/models/resolve/main/tinyllamas/stories260K.gguf
RUN_ARGS ?= --prompt "Once upon a time" --max-tokens 100
# RUN_CMD: a subcommand before the options (`make serve` sets it to serve).
RUN_CMD ?=
run: deps
	$(MAKE) --no-print-directory build/tempo
	@model="$(MODEL)"; \
	if [ ! -f "$$model" ]; then \
	  model=build/models/stories260K.gguf; mkdir -p build/models; \
	  if [ ! -f "$$model" ]; then \
	    echo "$(MODEL) not found: downloading a small public TinyStories GGUF"; \
	    for u in $(MODEL_URLS); do curl -fL --retry 2 -o "$$model.part" "$$u" && mv "$$model.part" "$$model" && break; done; \
	    [ -f "$$model" ] || { echo "download failed: put a GGUF at $(MODEL) or run: make run MODEL=path/to/model.gguf"; exit 1; }; \
	  fi; \
	fi; \
	build/tempo $(RUN_CMD) --model "$$model" $(RUN_ARGS)

# The TEMPO explorer: `make serve` serves the page at http://127.0.0.1:8765/ with the same model.
SERVE_ARGS ?= --port 8765
serve:
	$(MAKE) --no-print-directory run RUN_CMD=serve RUN_ARGS="$(SERVE_ARGS)"

# The page's bundle web/dist/ is committed and embedded into build/tempo, so only rebuilding it
# from web/src needs Node: `make web` (npm ci first when the lockfile changed), then commit web/dist.
web: web/node_modules/.package-lock.json
	cd web && npm run build

web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund

clean:
	rm -rf build

# ---- fuzzing (tests/fuzz/) -------------------------------------------------
# Every parser of untrusted input has a libFuzzer harness tests/fuzz/fuzz_NAME.c
# with seeds generated into build/fuzz-seeds/corpus/NAME/ by tests/fuzz/make_seeds.c (with the
# binary regression inputs, build/fuzz-seeds/regressions/NAME/) and every crash found kept in
# tests/fuzz/regressions/NAME/ (a binary one then becomes a generator in make_seeds.c).
#   make fuzz                 each harness for FUZZ_SECONDS (default 60) with clang's
#                             libFuzzer + ASan + UBSan; one line per harness:
#                             executions, coverage, corpus, crashes
#   make fuzz FUZZ=gguf       only that harness (FUZZ is a list of names)
#   make fuzz-seeds           generate the seed corpora and binary regression inputs
#   make test                 replays seeds and regressions with gcc's ASan (no clang needed)
# Needs clang and libclang-rt-dev (Debian: apt-get install clang libclang-rt-14-dev).
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ         ?= $(FUZZ_NAMES)
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
# -Werror is gcc's gate (make, make test); clang's extra warnings are shown, not fatal.
FUZZ_CFLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                $(filter-out -Werror,$(WARN)) $(DEFS) -Itests/fuzz
FUZZ_HDRS    := $(wildcard include/*.h src/*/*.h tests/fuzz/*.h tools/*.h)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=build/fuzz/obj/%.o) $(FUZZ_LIB_EXTRA)
FUZZ_REPLAY  := $(FUZZ_NAMES:%=build/asan/fuzz/fuzz_%)

build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(VK_CFLAGS) -MMD -MP -fsanitize=fuzzer-no-link -c $< -o $@

# The numeric kernels parse nothing and are not what the harnesses explore; clang with ASan and
# UBSan takes over ten minutes on their always-inlined AVX-512 tiles, so they are built plainly.
build/fuzz/obj/src/kernels/%.o: src/kernels/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -O2 -g -std=c11 $(filter-out -Werror,$(WARN)) $(DEFS) -MMD -MP -c $< -o $@

build/fuzz/libtempo.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/common.c tools/gguf_write.c tools/st_write.c build/fuzz/libtempo.a $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< tests/fuzz/common.c tools/gguf_write.c tools/st_write.c build/fuzz/libtempo.a $(DEPLIBS)

# The same harness with gcc's ASan + UBSan and a main() that replays files.
build/asan/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/common.c tests/fuzz/replay_main.c build/asan/libtempo_tools.a build/asan/libtempo.a $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -Itests/fuzz -o $@ $< tests/fuzz/common.c tests/fuzz/replay_main.c build/asan/libtempo_tools.a build/asan/libtempo.a $(DEPLIBS)

build/fuzz/make_seeds: tests/fuzz/make_seeds.c tests/fuzz/common.c build/libtempo_tools.a build/libtempo.a $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(OPT_CFLAGS) -Itests/fuzz -o $@ tests/fuzz/make_seeds.c tests/fuzz/common.c build/libtempo_tools.a build/libtempo.a $(DEPLIBS)

# The seeds and the binary regression inputs are generated, never kept in git (make_seeds.c).
FUZZ_SEEDS := build/fuzz-seeds/stamp
$(FUZZ_SEEDS): build/fuzz/make_seeds
	rm -rf build/fuzz-seeds
	build/fuzz/make_seeds build/fuzz-seeds
	@touch $@

fuzz-seeds: $(FUZZ_SEEDS)

fuzz-build: $(FUZZ:%=build/fuzz/fuzz_%) $(FUZZ_SEEDS)

fuzz: fuzz-build
	@echo "fuzzing $(words $(FUZZ)) harnesses for $(FUZZ_SECONDS) s each (logs: build/fuzz/NAME.log)"
	@rc=0; for n in $(FUZZ); do tests/fuzz/run.sh $$n $(FUZZ_SECONDS) || rc=1; done; exit $$rc
