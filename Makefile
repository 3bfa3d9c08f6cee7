# tempo: GNU Make build.
#   make          build/tempo (CLI) and build/libtempo.a (library)
#   make test     every test, built with AddressSanitizer + UBSan
#   make bench    speed and memory benchmark (random-weight 1B-shape files)
#   make run      build and generate from a small real model

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

.PHONY: all test bench run clean deps
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

build/bench: bench/bench.c bench/probe.h build/libtempo.a
	$(CC) $(OPT_CFLAGS) -o $@ $< build/libtempo.a $(DEPLIBS)

build/kernel_timing: bench/kernel_timing.c bench/probe.h build/libtempo.a
	$(CC) $(OPT_CFLAGS) -o $@ $< build/libtempo.a $(DEPLIBS)

# The tests run from the repository root and read ../shared/.
# TEMPO_BIN lets tests that drive the CLI find the sanitized binary.
test: deps
	$(MAKE) --no-print-directory build/asan/test_tempo build/asan/tempo build/asan/example_embed build/tempo
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
