/* make_seeds.c: writes the seed corpora, ROOT/corpus/<harness>/, and the
 * regression inputs of crashes found in binary formats, ROOT/regressions/<harness>/
 * (make fuzz-seeds; ROOT is build/fuzz-seeds). Seeds are small, valid (or
 * nearly) inputs that reach deep into each parser; the fuzzers mutate from them.
 * Everything is generated here, nothing copied from ../shared and no binary
 * input kept in git: `make test` builds them and replays them all. A crash the
 * fuzzer finds lands in tests/fuzz/regressions/<harness>/; a text input may stay
 * there, a binary one becomes a generator below (regressions()) with its fix. */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/common.h"
#include "format/gguf.h"
#include "tools/gguf_write.h"
#include "format/safetensors.h"
#include "tools/st_write.h"
#include "tensor/dtype.h"

static const char *root;
static const char *kind = "corpus"; /* or "regressions" */

static char *out_path(const char *harness, const char *name) {
    static char p[1024];
    snprintf(p, sizeof p, "%s/%s", root, kind);
    mkdir(p, 0777);
    snprintf(p, sizeof p, "%s/%s/%s", root, kind, harness);
    mkdir(p, 0777);
    snprintf(p, sizeof p, "%s/%s/%s/%s", root, kind, harness, name);
    return p;
}

/* A seed made of one mode byte and a text. */
static void seed_mode_text(const char *harness, const char *name, uint8_t mode, const char *text) {
    size_t n = strlen(text);
    uint8_t *b = malloc(n + 1);
    b[0] = mode;
    memcpy(b + 1, text, n);
    fuzz_write(out_path(harness, name), b, n + 1);
    free(b);
}

static void gguf_seeds(void) {
    static const struct { const char *name; int variant; } v[] = {
        { "tiny-spm-f32.gguf", 0 },
        { "tiny-bpe-f32.gguf", TINY_BPE },
        { "tiny-spm-q8_0.gguf", TINY_Q8 },
        { "tiny-bpe-f16-tied.gguf", TINY_BPE | TINY_F16 | TINY_TIED },
        { "tiny-spm-ropefreqs-gqa.gguf", TINY_ROPE_FREQS | TINY_GQA },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (!fuzz_tiny_gguf(out_path("gguf", v[i].name), v[i].variant)) exit(1);
    /* the attacks on a tiny model: heads x head size wrapping int, a context of 1e8 */
    static const struct { const char *name, *key1, *key2; uint32_t v1, v2; } atk[] = {
        { "issue11-head-count-65537.gguf", "llama.attention.head_count", "llama.attention.key_length", 65537, 65536 },
        { "issue11-context-1e8.gguf", "llama.context_length", NULL, 100000000, 0 },
    };
    for (size_t i = 0; i < sizeof atk / sizeof atk[0]; i++) {
        char tmp[600], err[TP_ERR_LEN];
        snprintf(tmp, sizeof tmp, "%s/tiny.gguf", fuzz_dir());
        gguf_file *f = fuzz_tiny_gguf(tmp, 0) ? tp_gguf_open(tmp, err) : NULL;
        if (!f) exit(1);
        gguf_writer *w = tp_gguf_writer_new(0);
        tp_gguf_w_copy_kv(w, f, NULL);
        tp_gguf_w_u32(w, atk[i].key1, atk[i].v1);
        if (atk[i].key2) tp_gguf_w_u32(w, atk[i].key2, atk[i].v2);
        for (uint64_t t = 0; t < f->n_tensors; t++) {
            const gguf_tensor *x = &f->tensors[t];
            tp_gguf_w_tensor_ref(w, x->name, x->type, x->n_dims, x->ne, x->data);
        }
        if (tp_gguf_writer_save(w, out_path("gguf", atk[i].name), err)) { fprintf(stderr, "%s\n", err); exit(1); }
        tp_gguf_writer_free(w);
        tp_gguf_close(f);
    }
    /* metadata only: every value type, arrays of each, nested arrays, alignment 64 */
    gguf_writer *w = tp_gguf_writer_new(64);
    tp_gguf_w_u8(w, "t.u8", 200);
    tp_gguf_w_i8(w, "t.i8", -100);
    tp_gguf_w_u16(w, "t.u16", 60000);
    tp_gguf_w_i16(w, "t.i16", -30000);
    tp_gguf_w_u32(w, "t.u32", 4000000000u);
    tp_gguf_w_i32(w, "t.i32", -2000000000);
    tp_gguf_w_u64(w, "t.u64", 18000000000000000000ull);
    tp_gguf_w_i64(w, "t.i64", -9000000000000000000ll);
    tp_gguf_w_f32(w, "t.f32", 1.5f);
    tp_gguf_w_f64(w, "t.f64", -2.25);
    tp_gguf_w_bool(w, "t.bool", true);
    tp_gguf_w_str(w, "t.str", "hello");
    const char *strs[3] = { "a", "", "ccc" };
    tp_gguf_w_arr_str(w, "t.arr_str", strs, 3);
    const int32_t i32[3] = { 1, -2, 3 };
    tp_gguf_w_arr_i32(w, "t.arr_i32", i32, 3);
    const double f64[2] = { 0.5, 1e300 };
    tp_gguf_w_arr(w, "t.arr_f64", GGUF_F64, f64, 2);
    gguf_value inner[2], outer;
    memset(inner, 0, sizeof inner);
    for (int k = 0; k < 2; k++) {
        inner[k].type = GGUF_ARRAY;
        inner[k].v.arr.elem_type = GGUF_I32;
        inner[k].v.arr.count = 3;
        inner[k].v.arr.raw = i32;
    }
    memset(&outer, 0, sizeof outer);
    outer.type = GGUF_ARRAY;
    outer.v.arr.elem_type = GGUF_ARRAY;
    outer.v.arr.count = 2;
    outer.v.arr.items = inner;
    tp_gguf_w_value(w, "t.nested", &outer);
    float data[32] = { 0 };
    uint64_t ne[2] = { 32, 1 };
    tp_gguf_w_tensor(w, "t.tensor", TP_F32, 2, ne, data);
    char err[TP_ERR_LEN];
    if (tp_gguf_writer_save(w, out_path("gguf", "metadata-all-types.gguf"), err)) { fprintf(stderr, "%s\n", err); exit(1); }
    tp_gguf_writer_free(w);
}

static void safetensors_seeds(const char *tmp) {
    /* the tiny model's weights, and a file of every dtype with metadata */
    char p[1024];
    snprintf(p, sizeof p, "%s/model.safetensors", tmp);
    size_t n;
    char err[TP_ERR_LEN];
    char *b = tp_read_file(p, &n, err);
    if (!b) { fprintf(stderr, "%s\n", err); exit(1); }
    fuzz_write(out_path("safetensors", "tiny-model.safetensors"), b, n);
    free(b);
    st_writer *w = tp_st_writer_new();
    tp_st_w_meta(w, "format", "pt");
    static const char *const dt[] = { "F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3" };
    uint8_t zero[64] = { 0 };
    for (size_t i = 0; i < sizeof dt / sizeof dt[0]; i++) {
        uint64_t shape[3] = { 2, 1, 3 };
        char name[32];
        snprintf(name, sizeof name, "t.%s", dt[i]);
        tp_st_w_tensor(w, name, dt[i], (int)(i % 4), shape, zero);
    }
    if (tp_st_writer_save(w, out_path("safetensors", "all-dtypes.safetensors"), err)) { fprintf(stderr, "%s\n", err); exit(1); }
    tp_st_writer_free(w);
}

/* Crashes the fuzzers found, each re-made by the construction that caused it: every one was an
 * error message quoting a name from the file that held a newline (messages are one line now:
 * tp_fail turns control characters into '?'). */
static void regressions(void) {
    kind = "regressions";
    /* GGUF: the file cut inside the tensor info of a tensor whose name holds a newline */
    char tmp[600], err[TP_ERR_LEN];
    snprintf(tmp, sizeof tmp, "%s/tiny.gguf", fuzz_dir());
    gguf_file *f = fuzz_tiny_gguf(tmp, TINY_BPE | TINY_F16 | TINY_TIED) ? tp_gguf_open(tmp, err) : NULL;
    if (!f) exit(1);
    gguf_writer *w = tp_gguf_writer_new(0);
    tp_gguf_w_copy_kv(w, f, NULL);
    static const char bad_name[] = "output_norm\nweight";
    for (uint64_t t = 0; t < f->n_tensors; t++) {
        const gguf_tensor *x = &f->tensors[t];
        tp_gguf_w_tensor_ref(w, t == f->n_tensors - 1 ? bad_name : x->name, x->type, x->n_dims, x->ne, x->data);
    }
    char renamed[620];
    snprintf(renamed, sizeof renamed, "%s/renamed.gguf", fuzz_dir()); /* tmp is mapped: the tensors' data */
    if (tp_gguf_writer_save(w, renamed, err)) { fprintf(stderr, "%s\n", err); exit(1); }
    tp_gguf_writer_free(w);
    tp_gguf_close(f);
    size_t n;
    char *b = tp_read_file(renamed, &n, err);
    if (!b) { fprintf(stderr, "%s\n", err); exit(1); }
    char *at = memmem(b, n, bad_name, sizeof bad_name - 1);
    if (!at) exit(1);
    fuzz_write(out_path("gguf", "error-quotes-tensor-name-with-newline.gguf"), b,
               (size_t)(at - b) + sizeof bad_name - 1 + 2); /* the name, then 2 bytes of its dimension count */
    free(b);

    /* safetensors: a tensor named "a\nb" whose data range does not match its shape */
    static const char hdr[] = "{\"a\\nb\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}";
    uint8_t st[8 + sizeof hdr - 1 + 4];
    uint64_t hl = sizeof hdr - 1;
    for (int i = 0; i < 8; i++) st[i] = (uint8_t)(hl >> (8 * i));
    memcpy(st + 8, hdr, sizeof hdr - 1);
    memset(st + 8 + hl, 0, 4);
    fuzz_write(out_path("safetensors", "error-quotes-tensor-name-with-newline.safetensors"), st, sizeof st);

    /* tokenizer_config.json (mode 2): a bos_token whose text holds an escaped newline */
    seed_mode_text("hf_config", "error-quotes-bos-token-with-newline.bin", 2,
                   "{\"bos_token\": \"<|begin_of_tex\\nt1e308|>\", \"e_toko1e308d_oken\": false}");
    kind = "corpus";
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: make_seeds ROOT (writes ROOT/corpus and ROOT/regressions)\n"); return 2; }
    root = argv[1];
    mkdir(root, 0777);
    gguf_seeds();
    const char *tmp = fuzz_dir();
    if (!fuzz_tiny_hf(tmp)) return 1;
    safetensors_seeds(tmp);

    fuzz_write_text(out_path("st_index", "three-tensors-two-shards.json"),
                    "{\"metadata\": {\"total_size\": 40}, \"weight_map\": {\"x\": \"a.safetensors\", "
                    "\"y\": \"a.safetensors\", \"z\": \"b.safetensors\"}}");
    fuzz_write_text(out_path("st_index", "one-tensor.json"), "{\"weight_map\":{\"z\":\"b.safetensors\"}}");

    seed_mode_text("hf_config", "config-llama3.bin", 0, fuzz_tiny_config_json);
    seed_mode_text("hf_config", "config-linear-tied.bin", 0,
                   "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 16,"
                   " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 4,"
                   " \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}, \"tie_word_embeddings\": true,"
                   " \"vocab_size\": 262, \"rms_norm_eps\": 1e-6}");
    seed_mode_text("hf_config", "config-mistral-window.bin", 0,
                   "{\"architectures\": [\"MistralForCausalLM\"], \"model_type\": \"mistral\", \"hidden_size\": 8,"
                   " \"intermediate_size\": 16, \"num_hidden_layers\": 2, \"num_attention_heads\": 2,"
                   " \"num_key_value_heads\": 1, \"sliding_window\": 32, \"max_position_embeddings\": 4096,"
                   " \"rope_parameters\": {\"rope_theta\": 1000000.0, \"rope_type\": \"default\"}}");
    seed_mode_text("hf_config", "generation-config.bin", 1, fuzz_tiny_generation_config_json);
    seed_mode_text("hf_config", "tokenizer-config.bin", 2, fuzz_tiny_tokenizer_config_json);
    seed_mode_text("hf_config", "tokenizer-config-plain.bin", 2,
                   "{\"bos_token\": null, \"eos_token\": \"<|eot_id|>\", \"add_bos_token\": false, "
                   "\"added_tokens_decoder\": {\"259\": {\"content\": \"<|begin_of_text|>\", \"special\": true}}}");

    char *tj = fuzz_tiny_tokenizer_json(false, false);
    seed_mode_text("tokenizer_json", "string-merges.bin", 0, tj);
    seed_mode_text("tokenizer_json", "string-merges-limited.bin", 2 | 1, tj);
    free(tj);
    tj = fuzz_tiny_tokenizer_json(true, true);
    seed_mode_text("tokenizer_json", "pair-merges-sequence.bin", 1, tj);
    seed_mode_text("tokenizer_json", "pair-merges-small-limit.bin", 8 | 4, tj);
    free(tj);

    fuzz_write_text(out_path("yaml", "run.yaml"),
                    "model: models/x.gguf\nprompt: \"Once upon a time\"\nmax_tokens: 20\nselection_threshold: 0.2\n"
                    "max_parallel_tokens: 4\nuse_retroactive_pruning: true\nattention_threshold: 0.02\n"
                    "kv_cache_type: q8_0\nmemory_policy: adapt\nmax_memory_gb: 2.5\n");
    fuzz_write_text(out_path("yaml", "dynamic.yaml"),
                    "# dynamic threshold\ndynamic_threshold: yes\nfinal_threshold: 0.9\nbezier_p1: 0.1\nbezier_p2: 0.7\n"
                    "use_relu: false\nseed: 7\ntemperature: 0.8\ntop_k: 40\ntop_p: 0.95\ndefault_mode: true\n");
    fuzz_write_text(out_path("yaml", "structures.yaml"),
                    "---\nmax_tokens: &n 12\nmin_steps: *n\noutput_dir: 'out dir'\nprompt: |\n  two\n  lines\n"
                    "no_color: on\nthreads: 0x2\n...\n");

    seed_mode_text("tok_encode", "spm-hello.bin", 0 | 2, "Hello world");
    seed_mode_text("tok_encode", "bpe-hello.bin", 1 | 2, "Hello world");
    seed_mode_text("tok_encode", "bpe-specials.bin", 1 | 4 | 8,
                   "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>");
    seed_mode_text("tok_encode", "spm-specials.bin", 0 | 4 | 8, "<s>[INST] a </s> <unk>");
    seed_mode_text("tok_encode", "spm-unicode.bin", 0, " \xe2\x96\x81\xf0\x9f\xa6\x99 caf\xc3\xa9 \t\n  1234567 ");
    seed_mode_text("tok_encode", "bpe-unicode.bin", 1, "\xe4\xbd\xa0\xe5\xa5\xbd  'll 've 12345\r\n\xc3\x28 \xf0\x28\x8c\x28");
    static const uint8_t ids[13] = { 1 | 16, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0xf5, 1, 0 }; /* 1, INT_MAX, 128512 */
    fuzz_write(out_path("tok_encode", "bpe-ids.bin"), ids, sizeof ids);
    /* request bodies of the four endpoint kinds (the server harness) */
    fuzz_write_text(out_path("server_body", "branch.json"),
                    "{\"request\": {\"prompt\": \"x\", \"max_tokens\": 6}, \"path\": [[432], [383, 322]], "
                    "\"step\": 2, \"token_id\": 261, \"stream\": false}");
    fuzz_write_text(out_path("server_body", "chat.json"),
                    "{\"messages\": [{\"role\": \"system\", \"content\": \"You tell stories.\"}, "
                    "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"hi\"}]}], "
                    "\"max_completion_tokens\": 6, \"logprobs\": true, \"top_logprobs\": 3, "
                    "\"selection_threshold\": 0.05}");
    fuzz_write_text(out_path("server_body", "completion.json"),
                    "{\"prompt\": \"Once upon a time\", \"max_tokens\": 8, \"temperature\": 0, "
                    "\"stop\": [\"\\n\", \" end\"], \"logprobs\": 2, \"stream\": true, "
                    "\"stream_options\": {\"include_usage\": true}}");
    fuzz_write_text(out_path("server_body", "generate.json"),
                    "{\"prompt\": \"x\", \"max_tokens\": 12, \"selection_threshold\": 0.1, "
                    "\"use_retroactive_removal\": true, \"attention_threshold\": 0.02, "
                    "\"dynamic_threshold\": true, \"bezier_p1\": 0.3, \"use_relu\": true, "
                    "\"relu_activation_point\": 0.4, \"show_token_ids\": true, \"isolate\": true, "
                    "\"min_steps\": 2, \"seed\": 7}");
    regressions();
    return 0;
}
