/*
test_interop.c: other systems' draft formats (interop/) on project-made tiny models, no network.

  - round trips, bit for bit: our draft -> llama.cpp GGUF -> draft, -> SpecForge directory -> draft,
    and across (llama.cpp -> SpecForge -> ours); every tensor, d2t, t2d and the config. A shuffled
    draft vocabulary (so offsets and absolute ids differ) and norms != 1 (so a swapped norm shows).
  - BF16 exports: within bf16 rounding of the original, and a second round trip is exact
  - the conventions: llama.cpp's target_layers are our taps + 1, SGLang's eagle_config ids are our
    taps, a top-level id list is read as layer inputs; d2t absolute vs offsets; t2d; the Q/K row
    permutation is the one that makes Hugging Face's rotate_half RoPE equal ours (checked by computing
    both rotations)
  - format detection: our GGUF, llama.cpp's, a SpecForge directory or its model.safetensors
  - malformed safetensors: every truncation of an exported file, a list of corruptions (header length
    beyond the file, huge header, overlapping / out-of-range / gapped offsets, unknown dtype, shape/size
    mismatch, duplicate names, non-object JSON, ...), 3000 random byte mutations: each an Error that
    names the problem, never a crash (run under ASan + UBSan by make test-sanitize)
  - malformed drafts: a missing tensor, a transposed tensor, bad d2t / t2d, a bad config.json (every
    truncation too), llama.cpp GGUFs with wrong shapes, keys or ids
*/
#define TESTING
#include <unistd.h>
#include <ftw.h>
#include <dirent.h>
#include "../aurora.c"
#include "test_common.h"

static char temp_dir[256];

static const char* temp_path(const char* name) {
    static char paths[32][512];   // a ring: callers keep a few paths alive at once
    static int next = 0;
    char* path = paths[next++ % 32];
    snprintf(path, sizeof(paths[0]), "%s/%s", temp_dir, name);
    return path;
}

// 8 layers, so the taps 1, L/2-1, L-4 = 1, 3, 4 are distinct and unclamped; GQA; untied
static const TinyModelSpec TARGET_SPEC = {48, 8, 4, 2, 80, 300, 128, 0, TYPE_F32, 10000.0f, 7};
// for the truncation test: small, so every prefix of an exported file can be tried
static const TinyModelSpec SMALL_SPEC = {16, 8, 2, 1, 24, 260, 64, 1, TYPE_F32, 500000.0f, 8};

// Prints a section's verdict: ok, or FAILED if any check failed since `failed_before`.
static void section_done(const char* name, int failed_before) {
    printf("%-56s %s\n", name, tests_failed == failed_before ? "ok" : "FAILED");
}

static int load_tiny_target(Target* target, const char* name, TinyModelSpec spec) {
    Error err;
    const char* path = temp_path(name);
    if (tiny_model_write(path, &spec, &err) != 0 || target_load(target, path, &backend_cpu_ref, 32, 8, &err) != 0) {
        check(0, "%s: %s", name, err.message);
        return -1;
    }
    return 0;
}

// A draft with a shuffled vocabulary of Vd ids and every weight random (norms 1 +- 0.3).
static void make_draft(Draft* draft, const Target* target, int Vd, uint64_t seed) {
    int V = target->config.vocab_size;
    int* order = mallocCheck((size_t)V * sizeof(int));
    uint64_t rng = random_seed_state(seed);
    for (int i = 0; i < V; i++) { order[i] = i; }
    for (int i = V - 1; i > 0; i--) {
        int j = (int)(random_u32(&rng) % (uint32_t)(i + 1));
        int t = order[i]; order[i] = order[j]; order[j] = t;
    }
    int32_t* d2t = mallocCheck((size_t)Vd * sizeof(int32_t));
    for (int i = 0; i < Vd; i++) { d2t[i] = order[i]; }
    draft_init_random(draft, target, Vd, d2t, seed);
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &draft->tensors[i];
        for (size_t j = 0; j < info->n_elements; j++) {
            float u = test_uniform(&rng, -1.0f, 1.0f);
            (*info->data)[j] = info->cols == 1 ? 1.0f + 0.3f * u : u * sqrtf(3.0f / info->cols);
        }
    }
    draft->config.norm_eps = 3e-6f;   // not the target's: the export must carry the draft's own
    free(order);
    free(d2t);
}

// Every tensor, the maps and the config equal; tolerance "exact" or bf16 rounding.
static void check_same_draft(const char* what, const Draft* got, const Draft* want, Tolerance tol) {
    const DraftConfig *a = &got->config, *b = &want->config;
    check(a->dim == b->dim && a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads && a->head_size == b->head_size &&
          a->ffn_dim == b->ffn_dim && a->vocab_size == b->vocab_size && a->target_vocab_size == b->target_vocab_size &&
          a->rope_theta == b->rope_theta && a->norm_eps == b->norm_eps,
          "%s: config differs (eps %g vs %g, theta %g vs %g, vocab %d vs %d)", what, a->norm_eps, b->norm_eps,
          a->rope_theta, b->rope_theta, a->vocab_size, b->vocab_size);
    if (a->vocab_size != b->vocab_size || a->dim != b->dim) { return; }
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        char label[160];
        snprintf(label, sizeof(label), "%s: %s", what, got->tensors[i].gguf_name);
        check(got->tensors[i].n_elements == want->tensors[i].n_elements, "%s: size", label);
        if (got->tensors[i].n_elements != want->tensors[i].n_elements) { continue; }
        check_tensor(label, *got->tensors[i].data, *want->tensors[i].data, got->tensors[i].n_elements, tol);
    }
    char label[160];
    snprintf(label, sizeof(label), "%s: d2t", what);
    check_ints(label, got->d2t, want->d2t, (size_t)a->vocab_size);
    snprintf(label, sizeof(label), "%s: t2d", what);
    check_ints(label, got->t2d, want->t2d, (size_t)a->target_vocab_size);
}

static int load_draft(Draft* draft, const char* path, const Target* target, const char* what) {
    Error err;
    if (draft_load(draft, path, target, &err) != 0) {
        check(0, "%s: load %s: %s", what, path, err.message);
        return -1;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// round trips

static void test_round_trips(const Target* target) {
    int failed_before = tests_failed;
    Draft original, via_llama, via_specforge, across, bf16_once, bf16_twice;
    make_draft(&original, target, 200, 11);
    Error err;
    const char* gguf_path = temp_path("draft.llama.gguf");
    const char* directory = temp_path("draft.specforge");
    check(draft_export_llama_cpp(&original, target, gguf_path, TYPE_F32, &err) == 0, "export llama.cpp: %s", err.message);
    check(draft_export_specforge(&original, target, directory, TYPE_F32, &err) == 0, "export specforge: %s", err.message);
    check(eagle3_format_of(gguf_path) == DRAFT_FORMAT_LLAMA_CPP, "an eagle3 GGUF is recognised as llama.cpp's");
    check(eagle3_format_of(directory) == DRAFT_FORMAT_SPECFORGE, "a directory is recognised as SpecForge");
    char weights[600];
    snprintf(weights, sizeof(weights), "%s/model.safetensors", directory);
    check(eagle3_format_of(weights) == DRAFT_FORMAT_SPECFORGE, "model.safetensors is recognised as SpecForge");
    const char* ours = temp_path("draft.ours.gguf");
    check(draft_save(&original, ours, &err) == 0, "save: %s", err.message);
    check(eagle3_format_of(ours) == DRAFT_FORMAT_AURORA, "our GGUF is recognised as ours");
    check(eagle3_format_of(temp_path("no-such-file")) == DRAFT_FORMAT_AURORA, "a missing file is left to draft_load");

    if (load_draft(&via_llama, gguf_path, target, "llama.cpp") == 0) {
        check_same_draft("llama.cpp round trip", &via_llama, &original, tolerance("exact"));
        const char* directory2 = temp_path("across.specforge");
        check(draft_export_specforge(&via_llama, target, directory2, TYPE_F32, &err) == 0, "re-export: %s", err.message);
        if (load_draft(&across, directory2, target, "across") == 0) {
            check_same_draft("llama.cpp -> SpecForge round trip", &across, &original, tolerance("exact"));
            draft_free(&across);
        }
        draft_free(&via_llama);
    }
    if (load_draft(&via_specforge, directory, target, "specforge") == 0) {
        check_same_draft("SpecForge round trip", &via_specforge, &original, tolerance("exact"));
        draft_free(&via_specforge);
    }
    if (load_draft(&via_specforge, weights, target, "specforge file") == 0) {
        check_same_draft("SpecForge round trip (path to model.safetensors)", &via_specforge, &original, tolerance("exact"));
        draft_free(&via_specforge);
    }

    // BF16: one rounding, then exact; for both formats
    Tolerance bf16 = {"bf16", 0.0f, 1.0f / 256.0f, "one round to bfloat16 (8 significant bits)"};
    for (int format = 0; format < 2; format++) {
        const char* first = temp_path(format ? "bf16.specforge" : "bf16.gguf");
        const char* second = temp_path(format ? "bf16b.specforge" : "bf16b.gguf");
        int status = format ? draft_export_specforge(&original, target, first, TYPE_BF16, &err)
                            : draft_export_llama_cpp(&original, target, first, TYPE_BF16, &err);
        check(status == 0, "bf16 export: %s", err.message);
        if (load_draft(&bf16_once, first, target, "bf16") != 0) { continue; }
        check_same_draft(format ? "SpecForge bf16 vs original" : "llama.cpp bf16 vs original", &bf16_once, &original, bf16);
        status = format ? draft_export_specforge(&bf16_once, target, second, TYPE_BF16, &err)
                        : draft_export_llama_cpp(&bf16_once, target, second, TYPE_BF16, &err);
        if (status == 0 && load_draft(&bf16_twice, second, target, "bf16 twice") == 0) {
            check_same_draft(format ? "SpecForge bf16 second round trip" : "llama.cpp bf16 second round trip", &bf16_twice,
                             &bf16_once, tolerance("exact"));
            draft_free(&bf16_twice);
        }
        draft_free(&bf16_once);
    }
    draft_free(&original);
    section_done("round trips (llama.cpp, SpecForge, across, bf16)", failed_before);
}

// ----------------------------------------------------------------------------
// conventions

// Hugging Face's RoPE (rotate_half): pairs (j, j + HS/2) rotated by position * theta^(-2j/HS).
static void rope_rotate_half(float* x, int n_heads, int HS, int position, float theta) {
    for (int h = 0; h < n_heads; h++) {
        float* head = x + (size_t)h * HS;
        for (int j = 0; j < HS / 2; j++) {
            double angle = position * pow((double)theta, -2.0 * j / HS);
            float c = (float)cos(angle), s = (float)sin(angle);
            float x0 = head[j], x1 = head[j + HS / 2];
            head[j] = x0 * c - x1 * s;
            head[j + HS / 2] = x0 * s + x1 * c;
        }
    }
}

static void test_conventions(const Target* target) {
    int failed_before = tests_failed;
    Draft draft;
    make_draft(&draft, target, 200, 12);
    Error err;
    const DraftConfig* c = &draft.config;
    const char* gguf_path = temp_path("conv.gguf");
    const char* directory = temp_path("conv.specforge");
    check(draft_export_llama_cpp(&draft, target, gguf_path, TYPE_F32, &err) == 0, "export: %s", err.message);
    check(draft_export_specforge(&draft, target, directory, TYPE_F32, &err) == 0, "export: %s", err.message);
    const int* taps = target->config.tap_layers;
    check(taps[0] == 1 && taps[1] == 3 && taps[2] == 4, "tiny target taps 1, L/2-1, L-4 = 1, 3, 4");

    // llama.cpp: target_layers = taps + 1 (layer inputs), d2t absolute in I64, the tokenizer copied
    GGUFFile file;
    if (gguf_open(&file, gguf_path, &err) == 0) {
        int32_t* layers = NULL;
        uint64_t n = 0;
        check(gguf_get_int_array(&file, "eagle3.target_layers", &layers, &n, &err) == 0 && n == 3 &&
              layers[0] == 2 && layers[1] == 4 && layers[2] == 5, "eagle3.target_layers = taps + 1 = 2, 4, 5");
        free(layers);
        const GGUFTensor* d2t = gguf_find_tensor(&file, "d2t");
        check(d2t != NULL && d2t->type == TYPE_I64 && d2t->n_dims == 1 && d2t->shape[0] == c->vocab_size, "d2t is I64 [V_d]");
        int absolute = d2t != NULL;
        for (int i = 0; d2t != NULL && i < c->vocab_size; i++) {
            int64_t id;
            memcpy(&id, (const uint8_t*)d2t->data + 8 * i, 8);
            absolute &= id == draft.d2t[i];
        }
        check(absolute, "llama.cpp d2t holds absolute target ids");
        check(gguf_find(&file, "tokenizer.ggml.tokens") != NULL && gguf_find(&file, "tokenizer.ggml.model") != NULL,
              "the target's tokenizer is copied into the llama.cpp draft");
        check(gguf_find(&file, "llama.block_count") == NULL, "only tokenizer keys are copied from the target");
        const GGUFTensor* output = gguf_find_tensor(&file, "output.weight");
        check(output != NULL && output->shape[0] == c->dim && output->shape[1] == c->vocab_size, "output.weight [C, V_d]");
        gguf_close(&file);
    }

    // SpecForge: offsets, t2d mask, eagle_config ids = taps, tie_word_embeddings false
    SafetensorsFile weights;
    char path[600];
    snprintf(path, sizeof(path), "%s/model.safetensors", directory);
    if (safetensors_open(&weights, path, &err) == 0) {
        const SafetensorsTensor* offsets = safetensors_find(&weights, "d2t");
        const SafetensorsTensor* mask = safetensors_find(&weights, "t2d");
        check(offsets && strcmp(offsets->dtype, "I64") == 0 && mask && strcmp(mask->dtype, "BOOL") == 0 &&
              mask->shape[0] == target->config.vocab_size, "d2t I64, t2d BOOL [V]");
        int ok = offsets != NULL && mask != NULL, in_mask = 0;
        for (int i = 0; ok && i < c->vocab_size; i++) {
            int64_t offset;
            memcpy(&offset, offsets->data + 8 * i, 8);
            ok &= offset + i == draft.d2t[i];
        }
        for (int t = 0; mask && t < target->config.vocab_size; t++) { in_mask += mask->data[t] != 0; }
        check(ok && in_mask == c->vocab_size, "SpecForge d2t holds offsets (target = i + d2t[i]); t2d marks V_d ids");
        const SafetensorsTensor* q = safetensors_find(&weights, "midlayer.self_attn.q_proj.weight");
        check(q && q->n_dims == 2 && q->shape[0] == c->n_heads * c->head_size && q->shape[1] == 2 * c->dim,
              "q_proj is [NH*HS, 2C] (PyTorch order)");
        // the permutation's meaning: rotate_half RoPE on the HF projection equals our RoPE on ours
        if (q != NULL) {
            int QD = c->n_heads * c->head_size, C2 = 2 * c->dim, position = 7;
            float* hf = mallocCheck((size_t)QD * C2 * sizeof(float));
            safetensors_tensor_to_f32(&weights, q, hf, &err);
            float* x = mallocCheck((size_t)C2 * sizeof(float));
            uint64_t rng = random_seed_state(5);
            fill_uniform(x, (size_t)C2, &rng, -1.0f, 1.0f);
            float* q_ours = mallocCheck((size_t)QD * sizeof(float));
            float* q_hf = mallocCheck((size_t)QD * sizeof(float));
            float* q_hf_as_ours = mallocCheck((size_t)QD * sizeof(float));
            matmul_forward_cpu(q_ours, x, matrix_f32(draft.weights.wq), 1, C2, QD);
            matmul_forward_cpu(q_hf, x, matrix_f32(hf), 1, C2, QD);
            rope_forward_cpu(q_ours, q_ours, &position, 1, c->n_heads, c->head_size, c->rope_theta);
            rope_rotate_half(q_hf, c->n_heads, c->head_size, position, c->rope_theta);
            // the same vectors up to the order of the rows (HF j, j+HS/2 <-> ours 2j, 2j+1)
            eagle3_permute_rope_rows(q_hf_as_ours, q_hf, c->n_heads, c->head_size, 1, 0);
            check_tensor("rotate_half(HF q) vs our RoPE(our q)", q_hf_as_ours, q_ours, (size_t)QD, tolerance("reorder"));
            free(hf); free(x); free(q_ours); free(q_hf); free(q_hf_as_ours);
        }
        safetensors_close(&weights);
    }
    snprintf(path, sizeof(path), "%s/config.json", directory);
    char* text = NULL;
    size_t length = 0;
    if (read_text_file(path, 1 << 20, &text, &length, &err) == 0) {
        check(strstr(text, "\"tie_word_embeddings\": false") != NULL, "config.json: tie_word_embeddings false");
        check(strstr(text, "\"eagle_aux_hidden_state_layer_ids\": [1, 3, 4]") != NULL, "config.json: eagle_config ids = taps");
        check(strstr(text, "\"draft_vocab_size\": 200") != NULL && strstr(text, "\"vocab_size\": 300") != NULL, "vocab sizes");
        check(strstr(text, "\"rms_norm_eps\": 3e-06") != NULL, "config.json: the draft's eps, shortest decimal");
        check(strstr(text, "\"max_position_embeddings\": 128") != NULL, "config.json: the target's context");
        free(text);
    }
    draft_free(&draft);
    section_done("conventions (layers, d2t, t2d, Q/K rows, config)", failed_before);
}

// ----------------------------------------------------------------------------
// malformed safetensors

// 8-byte length + header + data_size zero bytes.
static uint8_t* safetensors_bytes(const char* header, uint64_t declared_length, size_t data_size, size_t* size) {
    size_t n = strlen(header);
    *size = 8 + n + data_size;
    uint8_t* bytes = callocCheck(*size, 1);
    for (int i = 0; i < 8; i++) { bytes[i] = (uint8_t)(declared_length >> (8 * i)); }
    memcpy(bytes + 8, header, n);
    return bytes;
}

static void expect_safetensors_error(const char* what, const char* header, uint64_t declared_length, size_t data_size,
                                     const char* needle) {
    size_t size;
    uint8_t* bytes = safetensors_bytes(header, declared_length ? declared_length : strlen(header), data_size, &size);
    SafetensorsFile file;
    Error err = {{0}};
    int status = safetensors_open_memory(&file, bytes, size, "bad.safetensors", &err);
    check(status != 0 && strstr(err.message, needle) != NULL && strstr(err.message, "bad.safetensors") != NULL,
          "%s: expected an error with \"%s\", got status %d, \"%s\"", what, needle, status, err.message);
    if (status == 0) { safetensors_close(&file); }
    free(bytes);
}

// The writer lays tensors out largest dtype first (the order added within a size), so each starts at a
// multiple of its element size: added as U8 [5], F32 [3], I64 [1], BF16 [3], F32 [1], in insertion order the
// first F32 started at byte 5. The bytes round-trip, and the reader still tiles the data section.
static void test_safetensors_alignment(void) {
    SafetensorsWriter writer = {0};
    const uint8_t mask[5] = {1, 0, 1, 1, 0};
    const float values[3] = {1.5f, -2.0f, 3.25f}, one = 7.0f;
    const int64_t index = -3;
    const uint16_t halves[3] = {0x3F80, 0xC000, 0x4050};
    int64_t five[1] = {5}, three[1] = {3}, single[1] = {1};
    safetensors_writer_add(&writer, "mask", "U8", 1, five, mask, sizeof(mask));
    safetensors_writer_add(&writer, "values", "F32", 1, three, values, sizeof(values));
    safetensors_writer_add(&writer, "index", "I64", 1, single, &index, sizeof(index));
    safetensors_writer_add(&writer, "halves", "BF16", 1, three, halves, sizeof(halves));
    safetensors_writer_add(&writer, "one", "F32", 1, single, &one, sizeof(one));
    char path[300];
    snprintf(path, sizeof(path), "%s/aligned.safetensors", temp_dir);
    Error err;
    check(safetensors_writer_save(&writer, path, &err) == 0, "aligned safetensors: %s", err.message);
    safetensors_writer_free(&writer);
    SafetensorsFile file;
    if (safetensors_open(&file, path, &err) != 0) { check(0, "aligned safetensors: %s", err.message); return; }
    const char* names[5] = {"index", "values", "one", "halves", "mask"};   // the layout expected
    const void* bytes[5] = {&index, values, &one, halves, mask};
    uint64_t begin = 0;
    int aligned = 1, laid_out = 1, same = 1;
    for (int i = 0; i < 5; i++) {
        const SafetensorsTensor* t = safetensors_find(&file, names[i]);
        if (t == NULL) { laid_out = 0; continue; }
        aligned &= t->begin % t->dtype_size == 0 && (size_t)(t->data - file.bytes) % t->dtype_size == 0;
        laid_out &= t->begin == begin;
        same &= memcmp(t->data, bytes[i], t->n_bytes) == 0;
        begin = t->end;
    }
    check(aligned, "safetensors writer: every tensor should start at a multiple of its element size, in the file too");
    check(laid_out, "safetensors writer: tensors laid out I64, F32, F32, BF16, U8 (largest dtype first, stable)");
    check(same, "safetensors writer: the bytes should round-trip");
    safetensors_close(&file);
    unlink(path);
    // the writer refuses, naming the tensor or key, what no reader would take: a negative dimension (whose
    // product with another wraps to the right byte count), the header's reserved name, its own "format" key
    struct { const char* name; int64_t shape[2]; const char* key; const char* needle; } refused[] = {
        {"negative", {-1, -1}, NULL, "tensor 'negative': a negative dimension"},
        {"__metadata__", {1, 1}, NULL, "tensor '__metadata__': the header's reserved name"},
        {"fine", {1, 1}, "format", "metadata 'format': duplicate key"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        SafetensorsWriter bad = {0};
        safetensors_writer_add(&bad, refused[i].name, "F32", 2, refused[i].shape, &one, sizeof(one));
        if (refused[i].key) { safetensors_writer_add_metadata(&bad, refused[i].key, "x"); }
        int status = safetensors_writer_save(&bad, path, &err);
        check(status != 0 && strstr(err.message, refused[i].needle) != NULL && access(path, F_OK) != 0,
              "safetensors writer: expected a refusal with \"%s\" and no file, got %d (%s)", refused[i].needle, status,
              status ? err.message : "written");
        safetensors_writer_free(&bad);
        unlink(path);
    }
}

static void test_malformed_safetensors(const Target* small) {
    int failed_before = tests_failed;
    // a valid one first, so the cases below fail for their one reason
    size_t size;
    const char* valid = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[8,12]},\"__metadata__\":{\"format\":\"pt\"}}";
    uint8_t* bytes = safetensors_bytes(valid, strlen(valid), 12, &size);
    SafetensorsFile file;
    Error err;
    check(safetensors_open_memory(&file, bytes, size, "ok.safetensors", &err) == 0, "valid file: %s", err.message);
    if (file.n_tensors == 2) {
        const SafetensorsTensor* b = safetensors_find(&file, "b");
        check(b && b->n_dims == 2 && b->shape[0] == 1 && b->shape[1] == 2 && b->data == file.bytes + 8 + strlen(valid) + 8,
              "valid file: shape and data of 'b'");
        safetensors_close(&file);
    }
    free(bytes);

    Error short_err = {{0}};
    check(safetensors_open_memory(&file, "\x01\0\0", 3, "short.safetensors", &short_err) != 0 &&
          strstr(short_err.message, "too short") != NULL, "3 bytes: %s", short_err.message);
    expect_safetensors_error("empty header", "", 0, 0, "does not start with '{'");
    expect_safetensors_error("header length beyond the file", valid, 1000, 12, "beyond the end of the file");
    expect_safetensors_error("huge header", valid, 1ull << 40, 12, "100 MB limit");
    expect_safetensors_error("non-object JSON", "[1, 2, 3]", 0, 0, "does not start with '{'");
    expect_safetensors_error("whitespace before the object", " {}", 0, 0, "does not start with '{'");
    expect_safetensors_error("invalid JSON", "{\"a\":{\"dtype\":\"F32\",}}", 0, 0, "expected");
    expect_safetensors_error("trailing garbage", "{} x", 0, 0, "expected end of line");
    expect_safetensors_error("entry not an object", "{\"a\":5}", 0, 0, "described by a number");
    expect_safetensors_error("missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4, "no 'dtype'");
    expect_safetensors_error("missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0, 4, "no 'data_offsets'");
    expect_safetensors_error("unknown dtype", "{\"a\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4,
                             "unknown dtype 'F7'");
    expect_safetensors_error("dtype not a string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4,
                             "unknown dtype a number");
    expect_safetensors_error("shape/size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8,
                             "holds 12 bytes by its shape");
    expect_safetensors_error("negative size", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, 4,
                             "non-negative integer");
    expect_safetensors_error("fractional size", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 0, 4,
                             "non-negative integer");
    // whole numbers not written as integers (Hugging Face's reader refuses them; 1e-400 read as 0 here)
    expect_safetensors_error("a size written 1.0", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 0, 4,
                             "not written as an integer");
    expect_safetensors_error("a size of 1e-400", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e-400],\"data_offsets\":[0,0]}}", 0, 0,
                             "not written as an integer");
    expect_safetensors_error("an offset written 4e0", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4e0]}}", 0, 4,
                             "not written as an integer");
    expect_safetensors_error("shape overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                             "\"data_offsets\":[0,4]}}", 0, 4, "more than 2^64 elements");
    expect_safetensors_error("begin after end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 0, 4,
                             "begin <= end");
    expect_safetensors_error("overlapping offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 12, "overlapping tensor 'a'");
    expect_safetensors_error("out-of-range offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 4,
                             "beyond the 4 bytes of data");
    expect_safetensors_error("huge offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[9007199254740000,"
                             "9007199254740001]}}", 0, 4, "without gaps");
    expect_safetensors_error("gap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                             "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 0, 12, "without gaps");
    expect_safetensors_error("trailing data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 8,
                             "no trailing bytes");
    expect_safetensors_error("duplicate name", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                             "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 0, 8, "member \"a\" appears twice");
    expect_safetensors_error("duplicate field", "{\"a\":{\"dtype\":\"F16\",\"dtype\":\"BF16\",\"shape\":[2],"
                             "\"data_offsets\":[0,4]}}", 0, 4, "member \"dtype\" appears twice");
    expect_safetensors_error("metadata not strings", "{\"__metadata__\":{\"format\":1}}", 0, 0, "not an object of strings");
    expect_safetensors_error("too many dimensions", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                             "\"data_offsets\":[0,1]}}", 0, 1, "at most 8 sizes");
    char deep[400] = "{\"__metadata__\":";
    for (int i = 0; i < 100; i++) { strcat(deep, "["); }
    expect_safetensors_error("deep nesting", deep, 0, 0, "levels of nesting");

    // every truncation of a real exported draft fails cleanly; the whole file opens
    Draft draft;
    make_draft(&draft, small, 100, 13);
    const char* directory = temp_path("small.specforge");
    check(draft_export_specforge(&draft, small, directory, TYPE_F32, &err) == 0, "export: %s", err.message);
    char path[600];
    snprintf(path, sizeof(path), "%s/model.safetensors", directory);
    char* content = NULL;
    size_t length = 0;
    if (read_text_file(path, 1 << 24, &content, &length, &err) == 0) {
        int clean = 1;
        for (size_t n = 0; n < length; n++) {
            Error e = {{0}};
            if (safetensors_open_memory(&file, content, n, "cut.safetensors", &e) == 0) { safetensors_close(&file); clean = 0; }
            clean &= e.message[0] != '\0';
        }
        check(clean, "every one of the %zu truncations of an exported model.safetensors fails with a message", length);
        check(safetensors_open_memory(&file, content, length, "whole.safetensors", &err) == 0, "whole: %s", err.message);
        if (file.n_tensors) { safetensors_close(&file); }
        // random byte mutations: open or fail, never crash (ASan / UBSan watch the reads)
        uint64_t rng = random_seed_state(21);
        uint8_t* mutated = mallocCheck(length);
        int opened = 0;
        for (int trial = 0; trial < 3000; trial++) {
            memcpy(mutated, content, length);
            int n_flips = 1 + (int)(random_u32(&rng) % 4);
            for (int f = 0; f < n_flips; f++) {
                size_t at = random_u32(&rng) % (uint32_t)(length < 2048 ? length : 2048);   // mostly the header
                mutated[at] = (uint8_t)random_u32(&rng);
            }
            Error e;
            if (safetensors_open_memory(&file, mutated, length, "mutated.safetensors", &e) == 0) {
                for (int t = 0; t < file.n_tensors; t++) {
                    const SafetensorsTensor* tensor = &file.tensors[t];
                    if (tensor->n_elements > (1 << 20)) { continue; }
                    float* values = mallocCheck((size_t)tensor->n_elements * sizeof(float) + 1);
                    safetensors_tensor_to_f32(&file, tensor, values, &e);
                    free(values);
                }
                safetensors_close(&file);
                opened++;
            }
        }
        check(opened < 3000, "mutations: some must fail (%d of 3000 opened)", opened);
        free(mutated);
        free(content);
    }
    draft_free(&draft);
    section_done("malformed safetensors (corruptions, truncations, fuzz)", failed_before);
}

// ----------------------------------------------------------------------------
// malformed drafts: SpecForge directories and llama.cpp GGUFs

// Copies a SpecForge export to a new directory, dropping one tensor (drop "f64:NAME": keeping it as F64 zeros
// instead), reshaping one (rows and cols swapped) or replacing d2t's data by given offsets; config.json is copied
// or replaced by `config`.
static const char* rewrite_specforge(const char* source, const char* name, const char* drop, const char* transpose,
                                     const int64_t* offsets, const char* config) {
    const char* directory = temp_path(name);
    Error err;
    make_directories(directory, &err);
    char path[600];
    snprintf(path, sizeof(path), "%s/model.safetensors", source);
    SafetensorsFile file;
    if (safetensors_open(&file, path, &err) != 0) { check(0, "%s", err.message); return directory; }
    SafetensorsWriter writer = {0};
    for (int t = 0; t < file.n_tensors; t++) {
        const SafetensorsTensor* tensor = &file.tensors[t];
        if (drop && strncmp(drop, "f64:", 4) == 0 && strcmp(tensor->name, drop + 4) == 0) {
            // ("f64:NAME": that tensor kept, in a dtype the reader does not take: zeros of its shape)
            int64_t f64_shape[2] = {tensor->shape[0], tensor->n_dims > 1 ? tensor->shape[1] : 1};
            uint8_t* zeros = callocCheck((size_t)tensor->n_elements, 8);
            safetensors_writer_add(&writer, tensor->name, "F64", tensor->n_dims, f64_shape, zeros, (size_t)tensor->n_elements * 8);
            free(zeros);
            continue;
        }
        if (drop && strcmp(tensor->name, drop) == 0) { continue; }
        int64_t shape[2] = {tensor->shape[0], tensor->n_dims > 1 ? tensor->shape[1] : 1};
        int n_dims = tensor->n_dims;
        if (transpose && strcmp(tensor->name, transpose) == 0) {   // (a vector of n: a matrix [1, n])
            int64_t s = shape[0]; shape[0] = shape[1]; shape[1] = s;
            n_dims = 2;
        }
        const void* data = offsets && strcmp(tensor->name, "d2t") == 0 ? (const void*)offsets : tensor->data;
        safetensors_writer_add(&writer, tensor->name, tensor->dtype, n_dims, shape, data, tensor->n_bytes);
    }
    snprintf(path, sizeof(path), "%s/model.safetensors", directory);
    check(safetensors_writer_save(&writer, path, &err) == 0, "rewrite: %s", err.message);
    safetensors_writer_free(&writer);
    safetensors_close(&file);
    snprintf(path, sizeof(path), "%s/config.json", directory);
    if (config != NULL) {
        write_file_atomic(path, config, strlen(config), &err);
    } else {
        char source_config[600];
        snprintf(source_config, sizeof(source_config), "%s/config.json", source);
        char* text = NULL;
        size_t length = 0;
        if (read_text_file(source_config, 1 << 20, &text, &length, &err) == 0) { write_file_atomic(path, text, length, &err); }
        free(text);
    }
    return directory;
}

static void expect_load_error(const char* what, const char* path, const Target* target, const char* needle) {
    Draft draft;
    Error err = {{0}};
    int status = draft_load(&draft, path, target, &err);
    check(status != 0 && strstr(err.message, needle) != NULL, "%s: expected an error with \"%s\", got status %d, \"%s\"",
          what, needle, status, err.message);
    if (status == 0) { draft_free(&draft); }
}

// The exported config.json with one "key": value line replaced (the export writes one key per line).
static char* config_with(const char* source, const char* key, const char* value) {
    char path[600];
    snprintf(path, sizeof(path), "%s/config.json", source);
    char* text = NULL;
    size_t length = 0;
    Error err;
    if (read_text_file(path, 1 << 20, &text, &length, &err) != 0) { return NULL; }
    char* out = mallocCheck(length + 4096);
    char pattern[128];
    snprintf(pattern, sizeof(pattern), "\n  \"%s\":", key);
    char* at = strstr(text, pattern);
    if (at == NULL) {   // a new key, inserted first
        snprintf(out, length + 4096, "{\n  \"%s\": %s,%s", key, value, text + 2);
    } else {
        char* end = strchr(at + 1, '\n');
        int has_comma = end[-1] == ',';
        snprintf(out, length + 4096, "%.*s\n  \"%s\": %s%s%s", (int)(at - text), text, key, value, has_comma ? "," : "", end);
    }
    free(text);
    return out;
}

static void test_malformed_specforge(const Target* target) {
    int failed_before = tests_failed;
    Draft draft;
    make_draft(&draft, target, 200, 14);
    Error err;
    char good[512];   // (a copy: temp_path's ring of 32 paths wraps within this test)
    snprintf(good, sizeof(good), "%s", temp_path("good.specforge"));
    check(draft_export_specforge(&draft, target, good, TYPE_F32, &err) == 0, "export: %s", err.message);

    expect_load_error("missing lm_head", rewrite_specforge(good, "m1", "lm_head.weight", NULL, NULL, NULL), target,
                      "required tensor 'lm_head.weight' is missing");
    expect_load_error("missing fc", rewrite_specforge(good, "m2", "fc.weight", NULL, NULL, NULL), target,
                      "required tensor 'fc.weight' is missing");
    // (with a later weight's shape wrong too: the dtype is judged in the first pass, with the shapes, before the
    // draft is allocated, so it is the first refusal; judged only when read, the shape's came first)
    expect_load_error("a weight in F64", rewrite_specforge(good, "m2b", "f64:fc.weight", "midlayer.self_attn.q_proj.weight", NULL,
                      NULL), target, "tensor 'fc.weight' has dtype F64, expected F32, F16 or BF16");
    expect_load_error("transposed q_proj", rewrite_specforge(good, "m3", NULL, "midlayer.self_attn.q_proj.weight", NULL, NULL),
                      target, "tensor 'midlayer.self_attn.q_proj.weight' has 2 dimensions [96, 48], expected [48, 96]");
    expect_load_error("a norm as a matrix", rewrite_specforge(good, "m3b", NULL, "norm.weight", NULL, NULL), target,
                      "tensor 'norm.weight' has 2 dimensions [1, 48], expected [48]");
    expect_load_error("missing d2t with a smaller vocabulary", rewrite_specforge(good, "m4", "d2t", NULL, NULL, NULL), target,
                      "no tensor 'd2t'");
    int64_t* offsets = callocCheck(200, sizeof(int64_t));   // all zero: ids 0..199, not what t2d marks
    expect_load_error("t2d disagrees with d2t", rewrite_specforge(good, "m5", NULL, NULL, offsets, NULL), target,
                      "tensor 't2d' says target id");
    for (int i = 0; i < 200; i++) { offsets[i] = -i; }      // every draft id to target id 0
    expect_load_error("duplicate ids", rewrite_specforge(good, "m6", "t2d", NULL, offsets, NULL), target, "distinct ids");
    offsets[0] = 300;                                       // target id 300 = V
    expect_load_error("id out of range", rewrite_specforge(good, "m7", "t2d", NULL, offsets, NULL), target, "[0, 300)");
    offsets[0] = INT64_MIN;
    expect_load_error("id overflow", rewrite_specforge(good, "m7b", "t2d", NULL, offsets, NULL), target, "holds -9223372036854775808 at draft id 0");
    free(offsets);

    // config.json
    struct { const char* what; const char* key; const char* value; const char* needle; } configs[] = {
        {"two layers",             "num_hidden_layers",   "2",            "expected 1"},
        {"vLLM speculators",       "transformer_layer_config", "{\"num_hidden_layers\": 1}", "a vLLM speculators config"},
        {"speculators_config",     "speculators_config",  "{}",           "has key 'speculators_config'"},
        {"wrong width",            "hidden_size",         "32",           "draft width 32, expected the target's width 48"},
        {"wrong target vocab",     "vocab_size",          "301",          "key 'vocab_size' is 301"},
        {"target hidden size",     "target_hidden_size",  "64",           "key 'target_hidden_size' is 64"},
        {"string for a number",    "intermediate_size",   "\"80\"",       "key 'intermediate_size' is a string"},
        {"rope scaling",           "rope_scaling",        "{\"type\": \"llama3\"}", "rope_scaling"},
        {"norm before residual",   "norm_before_residual", "true",        "norm_before_residual"},
        {"fc norm",                "norm_before_fc",      "true",         "norm_before_fc"},
        {"attention bias",         "attention_bias",      "true",         "attention_bias"},
        {"gelu",                   "hidden_act",          "\"gelu\"",     "hidden_act"},
        {"heads do not group",     "num_key_value_heads", "3",            "key/value groups"},
        {"wrong layers (SGLang)",  "eagle_config",        "{\"eagle_aux_hidden_state_layer_ids\": [2, 4, 5]}",
                                   "asks for the outputs of target layers 2, 4, 5, but this target taps 1, 3, 4"},
        {"outputs given as inputs", "eagle_config",       "{\"eagle_aux_hidden_state_layer_ids\": null}, \"eagle_aux_hidden_state_layer_ids\": [1, 3, 4]",
                                   "target layers 0, 2, 3"},
        {"layer ids not a list",   "eagle_config",        "{\"eagle_aux_hidden_state_layer_ids\": 5}", "array of 3 layer ids"},
        // SGLang reads the nested list, vLLM and llama.cpp the top-level one: both given, they must agree
        {"the two lists disagree", "eagle_config",        "{\"eagle_aux_hidden_state_layer_ids\": [1, 3, 4]}, \"eagle_aux_hidden_state_layer_ids\": [1, 3, 4]",
                                   "name different layers"},
        {"missing hidden_size",    "hidden_size",         "null",         "key 'hidden_size' is null"},
        // newer configs: RoPE's settings in rope_parameters (read first, as llama.cpp's converter reads them)
        {"rope_parameters llama3", "rope_parameters",     "{\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 8.0}",
                                   "'rope_parameters.rope_type' is \"llama3\", expected \"default\""},
        {"rope_parameters a list", "rope_parameters",     "[1]",          "'rope_parameters' is an array, expected an object"},
        {"rope_parameters theta",  "rope_parameters",     "{\"rope_type\": \"default\", \"rope_theta\": \"big\"}",
                                   "key 'rope_theta' is a string"},
        {"tied LM head",           "tie_word_embeddings", "true",         "tie_word_embeddings"},
        // an epsilon of 0 makes a zero row's RMSNorm 0/0; and a draft saved with it would not load again
        {"RMSNorm epsilon 0",      "rms_norm_eps",        "0",            "RMSNorm epsilon 0, expected positive"},
        {"epsilon past float",     "rms_norm_eps",        "1e39",         "key 'rms_norm_eps' is 1e+39, expected a number within the float range"},
        {"eagle_config a string",  "eagle_config",        "\"x\"",        "key 'eagle_config' is a string, expected an object"},
        {"two layer ids (SGLang)", "eagle_config",        "{\"eagle_aux_hidden_state_layer_ids\": [1, 3]}",
                                   "has 2 elements, expected an array of 3 layer ids"},
        // SGLang then feeds the draft the last hidden state alone (no fc over three taps)
        {"no aux hidden states",   "eagle_config",        "{\"use_aux_hidden_state\": false, \"eagle_aux_hidden_state_layer_ids\": [1, 3, 4]}",
                                   "'eagle_config.use_aux_hidden_state' is false"},
    };
    for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++) {
        char* config = config_with(good, configs[i].key, configs[i].value);
        char name[32];
        snprintf(name, sizeof(name), "c%zu", i);
        if (config) { expect_load_error(configs[i].what, rewrite_specforge(good, name, NULL, NULL, NULL, config), target, configs[i].needle); }
        free(config);
    }
    // a sharded checkpoint's index beside model.safetensors: SGLang and vLLM would load the shards it names, so
    // reading the directory, and exporting into it, are refused; the control: without the index it loads
    {
        const char* sharded = rewrite_specforge(good, "sharded", NULL, NULL, NULL, NULL);
        char index_path[600];
        snprintf(index_path, sizeof(index_path), "%s/model.safetensors.index.json", sharded);
        write_file_atomic(index_path, "{\"weight_map\": {}}", 18, &err);
        expect_load_error("a shard index beside model.safetensors", sharded, target, "holds model.safetensors.index.json");
        check(draft_export_specforge(&draft, target, sharded, TYPE_F32, &err) != 0 && strstr(err.message, "index.json"),
              "an export into a directory with a shard index should be refused");
        remove(index_path);
        Draft unsharded;
        if (draft_load(&unsharded, sharded, target, &err) == 0) { draft_free(&unsharded); }
        else { check(0, "the control: without its index the directory should load: %s", err.message); }
    }
    // the vLLM / llama.cpp convention: a top-level list of layer INPUTS is accepted when right
    char* config = config_with(good, "eagle_config", "null, \"eagle_aux_hidden_state_layer_ids\": [2, 4, 5]");
    Draft loaded;
    if (config && draft_load(&loaded, rewrite_specforge(good, "top", NULL, NULL, NULL, config), target, &err) == 0) {
        check_same_draft("top-level layer ids (inputs)", &loaded, &draft, tolerance("exact"));
        draft_free(&loaded);
    } else {
        check(0, "a top-level eagle_aux_hidden_state_layer_ids [2, 4, 5] should load: %s", err.message);
    }
    free(config);
    config = config_with(good, "eagle_config", "{\"eagle_aux_hidden_state_layer_ids\": [1, 3, 4]}, \"eagle_aux_hidden_state_layer_ids\": [2, 4, 5]");
    if (config && draft_load(&loaded, rewrite_specforge(good, "both", NULL, NULL, NULL, config), target, &err) == 0) {
        check(loaded.config.dim == draft.config.dim, "both layer lists, agreeing: loaded");
        draft_free(&loaded);
    } else {
        check(0, "both layer lists, agreeing (outputs [1, 3, 4], inputs [2, 4, 5]), should load: %s", err.message);
    }
    free(config);
    // RoPE's base in rope_parameters, as newer Hugging Face configs keep it, wins over a top-level rope_theta
    config = config_with(good, "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 20000.0}");
    if (config && draft_load(&loaded, rewrite_specforge(good, "c-rope-parameters", NULL, NULL, NULL, config), target, &err) == 0) {
        check(loaded.config.rope_theta == 20000.0f, "rope_parameters.rope_theta read: %g, expected 20000", loaded.config.rope_theta);
        draft_free(&loaded);
    } else {
        check(0, "a config with rope_parameters (default type) should load: %s", err.message);
    }
    free(config);
    expect_load_error("not an object", rewrite_specforge(good, "c-array", NULL, NULL, NULL, "[1, 2]"), target,
                      "expected one JSON object");
    expect_load_error("empty config", rewrite_specforge(good, "c-empty", NULL, NULL, NULL, ""), target, "expected one JSON object");
    // every truncation of config.json short of its closing brace fails with a message
    char path[600];
    snprintf(path, sizeof(path), "%s/config.json", good);
    char* text = NULL;
    size_t length = 0;
    const char* cut_directory = rewrite_specforge(good, "cut", NULL, NULL, NULL, "{}");
    char cut_path[600];
    snprintf(cut_path, sizeof(cut_path), "%s/config.json", cut_directory);
    if (read_text_file(path, 1 << 20, &text, &length, &err) == 0) {
        size_t close = (size_t)(strrchr(text, '}') - text);
        int clean = 1;
        for (size_t n = 0; n < close; n++) {
            write_file_atomic(cut_path, text, n, &err);
            Draft d;
            Error e = {{0}};
            if (draft_load(&d, cut_directory, target, &e) == 0) { draft_free(&d); clean = 0; }
            clean &= strstr(e.message, "config.json") != NULL;
        }
        check(clean, "every truncation of config.json (%zu) fails naming the file", close);
        free(text);
    }
    const char* no_config = rewrite_specforge(good, "no-config", NULL, NULL, NULL, NULL);
    snprintf(path, sizeof(path), "%s/config.json", no_config);
    unlink(path);
    expect_load_error("no config.json", no_config, target, "config.json: cannot open");
    draft_free(&draft);
    section_done("malformed SpecForge drafts (tensors, d2t/t2d, config)", failed_before);
}

// Copies an exported llama.cpp GGUF with one change: key `skip_key` dropped and (if add) a key added
// by the callback; tensor `drop` dropped; tensor `transpose` with its two dimensions swapped; `extra`
// tensor added; d2t replaced by `ids` (floats, I64).
typedef void (*AddKeys)(GGUFWriter* writer);
static const char* rewrite_gguf(const char* source, const char* name, const char* skip_key, AddKeys add,
                                const char* drop, const char* transpose, const char* extra, const float* ids) {
    const char* path = temp_path(name);
    Error err;
    GGUFFile file;
    if (gguf_open(&file, source, &err) != 0) { check(0, "%s", err.message); return path; }
    GGUFWriter* writer = gguf_writer_new();
    const char* skip[2] = {skip_key, NULL};
    gguf_writer_copy_values(writer, &file, skip_key ? skip : NULL, &err);
    if (add) { add(writer); }
    for (uint64_t t = 0; t < file.n_tensors; t++) {
        const GGUFTensor* tensor = &file.tensors[t];
        if (drop && strcmp(tensor->name, drop) == 0) { continue; }
        float* values = mallocCheck((size_t)tensor->n_elements * sizeof(float));
        gguf_tensor_to_f32(tensor, values);
        if (ids && strcmp(tensor->name, "d2t") == 0) { memcpy(values, ids, (size_t)tensor->n_elements * sizeof(float)); }
        int64_t shape[2] = {tensor->shape[0], tensor->shape[1]};
        if (transpose && strcmp(tensor->name, transpose) == 0) { shape[0] = tensor->shape[1]; shape[1] = tensor->shape[0]; }
        gguf_writer_add_tensor(writer, tensor->name, tensor->type, tensor->n_dims, shape, values);
        free(values);
    }
    if (extra) {
        float one[8] = {1, 1, 1, 1, 1, 1, 1, 1};
        int64_t shape[1] = {8};
        gguf_writer_add_tensor(writer, extra, TYPE_F32, 1, shape, one);
    }
    check(gguf_writer_save(writer, path, &err) == 0, "rewrite %s: %s", name, err.message);
    gguf_writer_free(writer);
    gguf_close(&file);
    return path;
}

static void add_wrong_layers(GGUFWriter* w) { int32_t v[3] = {1, 3, 4}; gguf_writer_add_array(w, "eagle3.target_layers", GGUF_TYPE_INT32, v, 3); }
static void add_two_layers_list(GGUFWriter* w) { int32_t v[2] = {2, 4}; gguf_writer_add_array(w, "eagle3.target_layers", GGUF_TYPE_INT32, v, 2); }
static void add_two_blocks(GGUFWriter* w) { gguf_writer_add_uint32(w, "eagle3.block_count", 2); }
static void add_wide_target(GGUFWriter* w) { gguf_writer_add_uint32(w, "eagle3.target_hidden_size", 64); }
static void add_norm_before_fc(GGUFWriter* w) { gguf_writer_add_bool(w, "eagle3.norm_before_fc", 1); }
static void add_eps_as_string(GGUFWriter* w) { gguf_writer_add_string(w, "eagle3.attention.layer_norm_rms_epsilon", "1e-6"); }
static void add_huge_layer(GGUFWriter* w) { int32_t v[3] = {INT32_MIN, 4, 5}; gguf_writer_add_array(w, "eagle3.target_layers", GGUF_TYPE_INT32, v, 3); }
static void add_rope_factor(GGUFWriter* w) { gguf_writer_add_float32(w, "eagle3.rope.scaling.factor", 4.0f); }
static void add_rope_linear(GGUFWriter* w) { gguf_writer_add_float32(w, "eagle3.rope.scale_linear", 2.0f); }
static void add_partial_rope(GGUFWriter* w) { gguf_writer_add_uint32(w, "eagle3.rope.dimension_count", 6); }
static void add_eps_zero(GGUFWriter* w) { gguf_writer_add_float32(w, "eagle3.attention.layer_norm_rms_epsilon", 0.0f); }

// (the target's tokens, for the tokenizer checks: test_malformed_llama_cpp sets it)
static const Target* tokens_target;
static void add_tokens_changed(GGUFWriter* w, int respell, int n_dropped) {   // (the last n_dropped left out)
    const Tokenizer* t = &tokens_target->tokenizer;
    const char** tokens = mallocCheck((size_t)t->vocab_size * sizeof(char*));
    for (int i = 0; i < t->vocab_size; i++) { tokens[i] = respell && i == 7 ? "respelled" : t->tokens[i]; }
    gguf_writer_add_string_array(w, "tokenizer.ggml.tokens", tokens, (uint64_t)(t->vocab_size - n_dropped));
    free(tokens);
}
static void add_respelled_tokens(GGUFWriter* w) { add_tokens_changed(w, 1, 0); }
static void add_short_tokens(GGUFWriter* w) { add_tokens_changed(w, 0, 129); }   // (llama.cpp allows 128 apart)
static void add_padded_short_tokens(GGUFWriter* w) { add_tokens_changed(w, 0, 128); }

static void test_malformed_llama_cpp(const Target* target) {
    tokens_target = target;
    int failed_before = tests_failed;
    Draft draft;
    make_draft(&draft, target, 200, 15);
    Error err;
    char good[512];   // (a copy: temp_path's ring of 32 paths wraps within this test)
    snprintf(good, sizeof(good), "%s", temp_path("good.llama.gguf"));
    check(draft_export_llama_cpp(&draft, target, good, TYPE_F32, &err) == 0, "export: %s", err.message);
    expect_load_error("transposed attn_q", rewrite_gguf(good, "g1.gguf", NULL, NULL, NULL, "blk.0.attn_q.weight", NULL, NULL),
                      target, "tensor 'blk.0.attn_q.weight' has 2 dimensions [48, 96], expected [96, 48]");
    expect_load_error("transposed fc", rewrite_gguf(good, "g2.gguf", NULL, NULL, NULL, "fc.weight", NULL, NULL),
                      target, "tensor 'fc.weight'");
    expect_load_error("missing ffn_down", rewrite_gguf(good, "g3.gguf", NULL, NULL, "blk.0.ffn_down.weight", NULL, NULL, NULL),
                      target, "required tensor 'blk.0.ffn_down.weight' is missing");
    expect_load_error("unknown tensor", rewrite_gguf(good, "g4.gguf", NULL, NULL, NULL, NULL, "rope_freqs.weight", NULL),
                      target, "RoPE frequency scaling");
    // our own format too: a tensor it does not read (its own embedding, here) is refused, not ignored
    char ours[512];
    snprintf(ours, sizeof(ours), "%s", temp_path("good.ours.gguf"));
    check(draft_save(&draft, ours, &err) == 0, "save: %s", err.message);
    Draft reread;
    if (draft_load(&reread, rewrite_gguf(ours, "o1.gguf", NULL, NULL, NULL, NULL, NULL, NULL), target, &err) == 0) {
        draft_free(&reread);   // the control: rewritten as it was, it loads
    } else {
        check(0, "our draft, rewritten unchanged, should load: %s", err.message);
    }
    expect_load_error("our format, an unknown tensor", rewrite_gguf(ours, "o2.gguf", NULL, NULL, NULL, NULL,
                      "draft.embed_tokens.weight", NULL), target, "tensor 'draft.embed_tokens.weight' is not part of an aurora draft");
    expect_load_error("wrong layers", rewrite_gguf(good, "g5.gguf", "eagle3.target_layers", add_wrong_layers, NULL, NULL, NULL, NULL),
                      target, "target layers 0, 2, 3, but this target taps 1, 3, 4");
    expect_load_error("two layer ids", rewrite_gguf(good, "g6.gguf", "eagle3.target_layers", add_two_layers_list, NULL, NULL, NULL, NULL),
                      target, "has 2 entries, expected 3");
    expect_load_error("no layer ids", rewrite_gguf(good, "g7.gguf", "eagle3.target_layers", NULL, NULL, NULL, NULL, NULL),
                      target, "'eagle3.target_layers' is missing");
    expect_load_error("layer id INT32_MIN", rewrite_gguf(good, "g7b.gguf", "eagle3.target_layers", add_huge_layer, NULL, NULL, NULL,
                      NULL), target, "has -2147483648 at index 0, expected a layer number in [1, 8]");
    expect_load_error("rope scaling factor, no type", rewrite_gguf(good, "g7c.gguf", NULL, add_rope_factor, NULL, NULL, NULL, NULL),
                      target, "factor 4 from eagle3.rope.scaling.factor");
    expect_load_error("rope scale_linear", rewrite_gguf(good, "g7d.gguf", NULL, add_rope_linear, NULL, NULL, NULL, NULL),
                      target, "factor 2 from eagle3.rope.scale_linear");
    expect_load_error("two blocks", rewrite_gguf(good, "g8.gguf", "eagle3.block_count", add_two_blocks, NULL, NULL, NULL, NULL),
                      target, "expected 1");
    expect_load_error("target width", rewrite_gguf(good, "g9.gguf", "eagle3.target_hidden_size", add_wide_target, NULL, NULL, NULL, NULL),
                      target, "target_hidden_size' is 64");
    expect_load_error("norm before fc", rewrite_gguf(good, "g10.gguf", NULL, add_norm_before_fc, NULL, NULL, NULL, NULL),
                      target, "norm_before_fc' is true");
    expect_load_error("eps as a string", rewrite_gguf(good, "g11.gguf", "eagle3.attention.layer_norm_rms_epsilon", add_eps_as_string,
                      NULL, NULL, NULL, NULL), target, "expected a number");
    expect_load_error("partial rope", rewrite_gguf(good, "g12.gguf", "eagle3.rope.dimension_count", add_partial_rope, NULL, NULL,
                      NULL, NULL), target, "rope dimension count 6");
    // the draft's tokenizer must be the target's: one token respelled, and 129 tokens short (past llama.cpp's 128)
    expect_load_error("another tokenizer", rewrite_gguf(good, "g12c.gguf", "tokenizer.ggml.tokens", add_respelled_tokens, NULL, NULL,
                      NULL, NULL), target, "token 7 of its tokenizer is \"respelled\"");
    expect_load_error("a tokenizer 129 tokens short", rewrite_gguf(good, "g12e.gguf", "tokenizer.ggml.tokens", add_short_tokens, NULL,
                      NULL, NULL, NULL), target, "its tokenizer has 171 tokens and the target's 300, more than 128 apart");
    {   // the control: 128 tokens short and otherwise the target's, as llama.cpp allows (padding), loads
        Draft padded;
        if (draft_load(&padded, rewrite_gguf(good, "g12f.gguf", "tokenizer.ggml.tokens", add_padded_short_tokens, NULL, NULL, NULL,
                                             NULL), target, &err) == 0) { draft_free(&padded); }
        else { check(0, "a tokenizer 128 tokens short should load, as in llama.cpp: %s", err.message); }
    }
    expect_load_error("eps 0", rewrite_gguf(good, "g12b.gguf", "eagle3.attention.layer_norm_rms_epsilon", add_eps_zero, NULL,
                      NULL, NULL, NULL), target, "RMSNorm epsilon 0, expected positive");
    float* ids = mallocCheck(200 * sizeof(float));
    for (int i = 0; i < 200; i++) { ids[i] = (float)draft.d2t[i]; }
    ids[5] = ids[6];
    expect_load_error("duplicate d2t", rewrite_gguf(good, "g13.gguf", NULL, NULL, NULL, NULL, NULL, ids), target, "distinct ids");
    ids[5] = -1.0f;
    expect_load_error("negative d2t", rewrite_gguf(good, "g14.gguf", NULL, NULL, NULL, NULL, NULL, ids), target, "[0, 300)");
    free(ids);
    expect_load_error("no d2t, 200-row output", rewrite_gguf(good, "g15.gguf", NULL, NULL, "d2t", NULL, NULL, NULL), target,
                      "there is no 'd2t'");
    // no output.weight: llama.cpp inherits the target's LM head; with V_d < V that cannot work
    expect_load_error("no output, V_d < V", rewrite_gguf(good, "g16.gguf", NULL, NULL, "output.weight", NULL, NULL, NULL), target,
                      "no 'output.weight'");
    draft_free(&draft);

    // a full-vocabulary draft without output.weight takes the target's LM head (its d2t the identity)
    make_draft(&draft, target, target->config.vocab_size, 16);
    check(draft_export_llama_cpp(&draft, target, good, TYPE_F32, &err) == 0, "export: %s", err.message);
    float* identity = mallocCheck((size_t)target->config.vocab_size * sizeof(float));
    for (int i = 0; i < target->config.vocab_size; i++) { identity[i] = (float)i; }
    Draft inherited;
    if (draft_load(&inherited, rewrite_gguf(good, "g17.gguf", NULL, NULL, "output.weight", NULL, NULL, identity), target, &err) == 0) {
        check_tensor("inherited LM head", inherited.weights.lm_head, (const float*)target->weights.output.data,
                     (size_t)target->config.vocab_size * target->config.dim, tolerance("exact")); // the reference keeps fp32
        draft_free(&inherited);
    } else {
        check(0, "no output.weight with V_d = V should load: %s", err.message);
    }
    // ... but only with d2t the identity: the inherited head's row i is target id i
    float* swapped = mallocCheck((size_t)target->config.vocab_size * sizeof(float));
    for (int i = 0; i < target->config.vocab_size; i++) { swapped[i] = (float)i; }
    swapped[7] = 8.0f; swapped[8] = 7.0f;
    expect_load_error("no output, d2t not the identity", rewrite_gguf(good, "g18.gguf", NULL, NULL, "output.weight", NULL, NULL,
                      swapped), target, "maps draft id 7 to target id 8; expected the identity");
    free(swapped);
    free(identity);
    draft_free(&draft);
    section_done("malformed llama.cpp drafts (shapes, keys, ids)", failed_before);
}

// Shapes our own drafts never take but imported ones may. A head size other than dim / heads must survive
// a save in our format (whose reader took dim / heads, so a trained import saved and loaded again failed);
// more query heads per key/value head than the attention holds is refused at load, naming the file, not
// at the first draft pass. And a SpecForge export that fails on its config leaves the old weights whole
// (both files written before either is renamed: the weights were renamed first).
static void test_imported_shapes(const Target* target) {
    int failed_before = tests_failed;
    Error err;
    const TargetConfig* tc = &target->config;
    DraftConfig shape = {.dim = tc->dim, .n_heads = 4, .n_kv_heads = 2, .head_size = 8, .ffn_dim = 64,
                         .vocab_size = tc->vocab_size, .target_vocab_size = tc->vocab_size, .rope_theta = 10000.0f,
                         .norm_eps = 1e-5f};   // head size 8, where dim / heads is 12
    Draft imported, ours;
    eagle3_draft_alloc(&imported, target, &shape, NULL);
    uint64_t rng = random_seed_state(21);
    for (int i = 0; i < DRAFT_NUM_TENSORS; i++) {
        const DraftTensorInfo* info = &imported.tensors[i];
        for (size_t j = 0; j < info->n_elements; j++) { (*info->data)[j] = test_uniform(&rng, -0.5f, 0.5f); }
    }
    const char* llama = temp_path("head8.llama.gguf"), *saved = temp_path("head8.ours.gguf");
    check(draft_export_llama_cpp(&imported, target, llama, TYPE_F32, &err) == 0, "export: %s", err.message);
    Draft loaded;
    if (load_draft(&loaded, llama, target, "head size 8 (llama.cpp)") == 0) {
        check(loaded.config.head_size == 8, "head size %d read from llama.cpp's file, expected 8", loaded.config.head_size);
        check(draft_save(&loaded, saved, &err) == 0, "save: %s", err.message);
        if (load_draft(&ours, saved, target, "head size 8 (ours, saved again)") == 0) {
            check_same_draft("head size 8: llama.cpp -> ours", &ours, &imported, tolerance("exact"));
            draft_free(&ours);
        }
        draft_free(&loaded);
    }
    // without value_length llama.cpp takes the values' head size as the width over the heads (12), not the key
    // length: refused here by name, not at a tensor's shape
    expect_load_error("head size 8, no value length", rewrite_gguf(llama, "head8-novalue.gguf", "eagle3.attention.value_length",
                      NULL, NULL, NULL, NULL, NULL), target, "value length 12 (absent: the width over the heads)");

    // a SpecForge export over an older one whose config cannot be replaced (config.json is a directory):
    // an error, and the old model.safetensors untouched, no temporary file left
    const char* directory = temp_path("blocked.specforge");
    char config[600], weights[600];
    snprintf(config, sizeof(config), "%s/config.json", directory);
    snprintf(weights, sizeof(weights), "%s/model.safetensors", directory);
    check(make_directories(config, &err) == 0 && write_file_atomic(weights, "old", 3, &err) == 0, "setup: %s", err.message);
    int status = draft_export_specforge(&imported, target, directory, TYPE_F32, &err);
    size_t n = 0;
    char* text = NULL;
    check(status != 0 && strstr(err.message, "config.json"), "an export whose config cannot be written must fail (%s)",
          status == 0 ? "written" : err.message);
    check(read_text_file(weights, 1 << 20, &text, &n, &err) == 0 && n == 3 && memcmp(text, "old", 3) == 0,
          "the old model.safetensors must stay as it was when the config fails (%zu bytes)", n);
    free(text);
    DIR* listing = opendir(directory);
    int leftovers = 0;
    for (struct dirent* entry; listing && (entry = readdir(listing)) != NULL;) { leftovers += strstr(entry->d_name, ".tmp.") != NULL; }
    if (listing) { closedir(listing); }
    check(leftovers == 0, "%d temporary files left in %s", leftovers, directory);
    // a failed export into new directories removes them (it once left them empty): about twenty made, each name
    // under NAME_MAX (the last under 220 bytes), the files' names past PATH_MAX though the directory's own is not
    char deep[4096];
    int length = snprintf(deep, sizeof(deep), "%s", temp_path("failed-export"));
    char* first_made = NULL;
    while (length < 4096 - 220) {
        if (first_made == NULL) { first_made = strdup(deep); }
        length += snprintf(deep + length, sizeof(deep) - (size_t)length, "/%0200d", 0);
    }
    length += snprintf(deep + length, sizeof(deep) - (size_t)length, "/%0*d", 4096 - 8 - length, 0);
    struct stat info;
    status = draft_export_specforge(&imported, target, deep, TYPE_F32, &err);
    check(status != 0, "an export whose files' names are too long must fail");   // (the message: the long name, cut)
    check(stat(first_made, &info) != 0 && errno == ENOENT, "a failed export left the directories it made (%s exists)", first_made);
    free(first_made);
    draft_free(&imported);

    // 96 query heads (of size 2) over one key/value head: more than MODEL_MAX_HEAD_GROUP (64)
    DraftConfig wide = shape;
    wide.n_heads = 96; wide.n_kv_heads = 1; wide.head_size = 2;
    eagle3_draft_alloc(&imported, target, &wide, NULL);
    const char* wide_path = temp_path("wide.llama.gguf");
    check(draft_export_llama_cpp(&imported, target, wide_path, TYPE_F32, &err) == 0, "export: %s", err.message);
    expect_load_error("96 query heads per key/value head", wide_path, target, "96 query heads per key/value head");
    draft_free(&imported);
    section_done("imported shapes (head size, head groups, a blocked export)", failed_before);
}

int main(void) {
    snprintf(temp_dir, sizeof(temp_dir), "/tmp/test_interop_XXXXXX");
    if (mkdtemp(temp_dir) == NULL) { perror("mkdtemp"); return 1; }
    Target target, small;
    if (load_tiny_target(&target, "target.gguf", TARGET_SPEC) != 0 || load_tiny_target(&small, "small.gguf", SMALL_SPEC) != 0) {
        return test_summary();
    }
    test_round_trips(&target);
    test_conventions(&target);
    test_safetensors_alignment();
    test_malformed_safetensors(&small);
    test_malformed_specforge(&target);
    test_malformed_llama_cpp(&target);
    test_imported_shapes(&target);
    target_free(&target);
    target_free(&small);
    remove_tree(temp_dir);   // only what this program wrote
    return test_summary();
}
