# tempo: GNU Make build.
#   make          build/tempo (CLI) and build/libtempo.a (library)
#   make test     every test, built with AddressSanitizer + UBSan
#   make bench    speed and memory benchmark (random-weight 1B-shape files)
#   make run      build and generate from a small real model
#   make fuzz     every libFuzzer harness of tests/fuzz/ for FUZZ_SECONDS each (clang)

CC      ?= gcc
PKGS    := libpcre2-8 libcjson yaml-0.1
WARN    := -std=c11 -Wall -Wextra -Werror -Wno-unused-parameter
DEFS    := -D_GNU_SOURCE -Iinclude -Isrc
DEPLIBS := -lpcre2-8 -lcjson -lyaml -lpthread -lm

OPT_CFLAGS  := -O2 -g $(WARN) $(DEFS)
TEST_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined $(WARN) $(DEFS)

LIB_SRC  := $(sort $(wildcard src/*/*.c))
LIB_SRC  := $(filter-out src/cli/%,$(LIB_SRC))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/*.c))
HDRS     := $(wildcard include/*.h src/*/*.h tests/*.h)

LIB_OBJ      := $(LIB_SRC:%.c=build/obj/%.o)
CLI_OBJ      := $(CLI_SRC:%.c=build/obj/%.o)
ASAN_LIB_OBJ := $(LIB_SRC:%.c=build/asan/%.o)
ASAN_CLI_OBJ := $(CLI_SRC:%.c=build/asan/%.o)
TEST_OBJ     := $(TEST_SRC:%.c=build/asan/%.o)

.PHONY: all test bench run clean deps fuzz fuzz-build fuzz-seeds
all: build/tempo build/libtempo.a

# Debian packages the build needs; `make deps` installs them (as root).
deps:
	@missing=""; for p in libpcre2-dev libcjson-dev libyaml-dev; do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing:$$missing"; \
	    apt-get update -qq && apt-get install -y -qq $$missing; \
	  else echo "tempo needs these Debian packages:$$missing"; \
	    echo "install them with: sudo apt-get install$$missing"; exit 1; fi; fi

build/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(OPT_CFLAGS) -c $< -o $@

build/asan/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -c $< -o $@

build/libtempo.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/tempo: $(CLI_OBJ) build/libtempo.a
	$(CC) $(OPT_CFLAGS) -o $@ $(CLI_OBJ) build/libtempo.a $(DEPLIBS)

build/asan/libtempo.a: $(ASAN_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/asan/tempo: $(ASAN_CLI_OBJ) build/asan/libtempo.a
	$(CC) $(TEST_CFLAGS) -o $@ $(ASAN_CLI_OBJ) build/asan/libtempo.a $(DEPLIBS)

build/asan/test_tempo: $(TEST_OBJ) build/asan/libtempo.a
	$(CC) $(TEST_CFLAGS) -o $@ $(TEST_OBJ) build/asan/libtempo.a $(DEPLIBS)

build/asan/example_embed: examples/embed.c build/asan/libtempo.a
	$(CC) $(TEST_CFLAGS) -o $@ $< build/asan/libtempo.a $(DEPLIBS)

build/bench: bench/bench.c build/libtempo.a
	$(CC) $(OPT_CFLAGS) -o $@ $< build/libtempo.a $(DEPLIBS)

# The tests run from the repository root and read ../shared/.
# TEMPO_BIN lets tests that drive the CLI find the sanitized binary. The fuzz
# harnesses are built with gcc's ASan too (FUZZ_REPLAY): a test replays their
# seeds and every regression case (tests/test_fuzz_replay.c).
test: deps
	$(MAKE) --no-print-directory build/asan/test_tempo build/asan/tempo build/asan/example_embed build/tempo \
	  $(FUZZ_REPLAY)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	TEMPO_BIN=build/asan/tempo TEMPO_RELEASE_BIN=build/tempo TEMPO_EXAMPLE_BIN=build/asan/example_embed \
	build/asan/test_tempo $(T)

bench: build/bench build/tempo
	build/bench

# The small real model `make run` uses: the shared copy, else a public TinyStories GGUF.
MODEL ?= ../shared/models/stories260K.gguf
MODEL_URLS := https://huggingface.co/ggml-org/models-moved/resolve/main/tinyllamas/stories260K.gguf \
              https://huggingface.co/ggml-org/models/resolve/main/tinyllamas/stories260K.gguf
RUN_ARGS ?= --prompt "Once upon a time" --max-tokens 100
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
	build/tempo --model "$$model" $(RUN_ARGS)

clean:
	rm -rf build

# ---- fuzzing (tests/fuzz/) -------------------------------------------------
# Every parser of untrusted input has a libFuzzer harness tests/fuzz/fuzz_NAME.c
# with seeds in tests/fuzz/corpus/NAME/ and every crash found kept in
# tests/fuzz/regressions/NAME/.
#   make fuzz                 each harness for FUZZ_SECONDS (default 60) with clang's
#                             libFuzzer + ASan + UBSan; one line per harness:
#                             executions, coverage, corpus, crashes
#   make fuzz FUZZ=gguf       only that harness (FUZZ is a list of names)
#   make fuzz-seeds           regenerate the committed seed corpora
#   make test                 replays seeds and regressions with gcc's ASan (no clang needed)
# Needs clang and libclang-rt-dev (Debian: apt-get install clang libclang-rt-14-dev).
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ         ?= $(FUZZ_NAMES)
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
# -Werror is gcc's gate (make, make test); clang's extra warnings are shown, not fatal.
FUZZ_CFLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                $(filter-out -Werror,$(WARN)) $(DEFS) -Itests/fuzz
FUZZ_HDRS    := $(HDRS) $(wildcard tests/fuzz/*.h)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=build/fuzz/obj/%.o)
FUZZ_REPLAY  := $(FUZZ_NAMES:%=build/asan/fuzz/fuzz_%)

build/fuzz/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

build/fuzz/libtempo.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/common.c build/fuzz/libtempo.a $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< tests/fuzz/common.c build/fuzz/libtempo.a $(DEPLIBS)

# The same harness with gcc's ASan + UBSan and a main() that replays files.
build/asan/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/common.c tests/fuzz/replay_main.c build/asan/libtempo.a $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -Itests/fuzz -o $@ $< tests/fuzz/common.c tests/fuzz/replay_main.c build/asan/libtempo.a $(DEPLIBS)

build/fuzz/make_seeds: tests/fuzz/make_seeds.c tests/fuzz/common.c build/libtempo.a $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(OPT_CFLAGS) -Itests/fuzz -o $@ tests/fuzz/make_seeds.c tests/fuzz/common.c build/libtempo.a $(DEPLIBS)

fuzz-seeds: build/fuzz/make_seeds
	build/fuzz/make_seeds tests/fuzz/corpus

fuzz-build: $(FUZZ:%=build/fuzz/fuzz_%)

fuzz: fuzz-build
	@echo "fuzzing $(words $(FUZZ)) harnesses for $(FUZZ_SECONDS) s each (logs: build/fuzz/NAME.log)"
	@rc=0; for n in $(FUZZ); do tests/fuzz/run.sh $$n $(FUZZ_SECONDS) || rc=1; done; exit $$rc
