/*
test_model.c: the target model on project-made tiny models (seeded random weights written with our GGUF
writer) of several shapes and every supported tensor type.

  - loading: config and tensor table read back; every arena tensor equals its dequantised GGUF tensor
  - the multi-token forward with a causal mask equals the same tokens fed one at a time
  - position ids: shifting every position leaves the logits unchanged (RoPE is relative), and a tree
    mask with repeated positions gives each node the logits of its root-to-node path run alone
  - taps and the final hidden state are what they claim to be
  - the OpenBLAS path equals the reference path on a whole forward
  - generation: greedy is deterministic and equals argmax of a fresh forward; sampling repeats by seed
  - malformed model files fail with a message naming the tensor or key
*/
#define TESTING
#include <unistd.h>
#include "../aurora.c"
#include "test_common.h"

static char temp_dir[256];

static const char* temp_path(const char* name) {
    static char path[512];
    snprintf(path, sizeof(path), "%s/%s.gguf", temp_dir, name);
    return path;
}

typedef struct { const char* label; TinyModelSpec spec; } NamedSpec;

static const NamedSpec SPECS[] = {
    // label                      dim  L  NH NKV  F    V   ctx tied type       theta    seed
    {"gqa-tied-f32",            {64,  4, 4, 2,  96, 300, 128, 1, TYPE_F32,  10000.0f, 1}},
    {"mha-untied-odd-f16",      {30,  3, 3, 3,  50, 261, 64,  0, TYPE_F16,  10000.0f, 2}},
    {"mqa-untied-bf16-odd",     {42,  2, 3, 1,  70, 300, 64,  0, TYPE_BF16, 500.0f,   3}},
    {"gqa-untied-q8_0",         {64,  2, 4, 1, 128, 320, 64,  0, TYPE_Q8_0, 10000.0f, 4}},
    {"gqa-tied-q4_0",           {64,  3, 2, 1,  96, 288, 64,  1, TYPE_Q4_0, 10000.0f, 5}},
    {"gqa-tied-q4_1",           {96,  5, 6, 2,  64, 384, 64,  1, TYPE_Q4_1, 100000.0f, 6}},
};
enum { NUM_SPECS = sizeof(SPECS) / sizeof(SPECS[0]) };

static void reset_cache(Target* target) {
    size_t n = (size_t)target->config.n_layers * target->cache_capacity * target->config.n_kv_heads * target->config.head_size;
    memset(target->key_cache, 0, n * sizeof(float));
    memset(target->value_cache, 0, n * sizeof(float));
}

static int* test_tokens(int n, int V, uint64_t seed) {
    int* tokens = mallocCheck((size_t)n * sizeof(int));
    uint64_t rng = random_seed_state(seed);
    for (int i = 0; i < n; i++) { tokens[i] = (int)(random_u32(&rng) % (uint32_t)V); }
    return tokens;
}

// ---- loading ---------------------------------------------------------------------------------
static void test_loading(const NamedSpec* named, Target* target) {
    const TinyModelSpec* s = &named->spec;
    TargetConfig* c = &target->config;
    check(c->dim == s->dim && c->n_layers == s->n_layers && c->n_heads == s->n_heads && c->n_kv_heads == s->n_kv_heads &&
          c->ffn_dim == s->ffn_dim && c->vocab_size == s->vocab_size && c->tied_output == s->tied_output &&
          c->rope_theta == s->rope_theta, "%s: config read back differs from the spec", named->label);
    check(target->has_tokenizer && target->tokenizer.vocab_size == s->vocab_size, "%s: tokenizer missing or wrong size", named->label);
    // for every tensor in the table, every layer: the arena holds exactly the dequantised GGUF data
    size_t counted = 0;
    for (int i = 0; i < TARGET_NUM_TENSORS; i++) {
        const TargetTensorInfo* info = &target->tensors[i];
        if (i == TARGET_NUM_TENSORS - 1 && c->tied_output) {
            check(target->weights.output.data == target->weights.token_embedding.data, "%s: tied output must alias the embedding", named->label);
            continue;
        }
        counted += info->n_elements;
        int copies = info->per_layer ? c->n_layers : 1;
        size_t per_copy = (size_t)info->rows * info->cols;
        float* expected = mallocCheck(per_copy * sizeof(float));
        float* loaded = mallocCheck(per_copy * sizeof(float));
        for (int layer = 0; layer < copies; layer++) {
            char name[128];
            snprintf(name, sizeof(name), info->gguf_name, layer);
            const GGUFTensor* tensor = gguf_find_tensor(&target->file, name);
            check(tensor != NULL, "%s: tensor %s missing from the file", named->label, name);
            if (tensor == NULL) { continue; }
            int expected_type = info->cols == 1 ? TYPE_F32 : s->weight_type;
            check(tensor->type == expected_type, "%s: %s has type %s, expected %s", named->label, name,
                  tensor_type_name(tensor->type), tensor_type_name(expected_type));
            gguf_tensor_to_f32(tensor, expected);
            target_tensor_to_host(target, i, layer, loaded);
            check_tensor(name, loaded, expected, per_copy, tolerance("exact"));
        }
        free(expected);
        free(loaded);
    }
    check(counted == target->n_weight_floats, "%s: tensor table covers %zu floats, arena has %zu", named->label,
          counted, target->n_weight_floats);
}

// ---- causal batch == one token at a time ------------------------------------------------------
static void test_batch_equals_sequential(const NamedSpec* named, Target* target) {
    int T = 9, V = target->config.vocab_size, C = target->config.dim;
    int* tokens = test_tokens(T, V, 11);
    int positions[9];
    for (int t = 0; t < T; t++) { positions[t] = t; }
    reset_cache(target);
    target_forward(target, tokens, positions, NULL, T, 0, 1);
    float* batch_logits = mallocCheck((size_t)T * V * sizeof(float));
    float* batch_taps = mallocCheck((size_t)T * 3 * C * sizeof(float));
    memcpy(batch_logits, target->host.logits, (size_t)T * V * sizeof(float));
    memcpy(batch_taps, target->host.features, (size_t)T * 3 * C * sizeof(float));
    reset_cache(target);
    char what[128];
    for (int t = 0; t < T; t++) {
        target_forward(target, &tokens[t], &positions[t], NULL, 1, t, 1);
        snprintf(what, sizeof(what), "%s: logits of token %d, batch vs one at a time", named->label, t);
        check_tensor(what, target->host.logits, batch_logits + (size_t)t * V, V, tolerance("layer"));
        snprintf(what, sizeof(what), "%s: taps of token %d, batch vs one at a time", named->label, t);
        check_tensor(what, target->host.features, batch_taps + (size_t)t * 3 * C, 3 * C, tolerance("layer"));
    }
    // all_logits = 0 puts the last row's logits in row 0
    reset_cache(target);
    target_forward(target, tokens, positions, NULL, T, 0, 0);
    snprintf(what, sizeof(what), "%s: last-row logits", named->label);
    check_tensor(what, target->host.logits, batch_logits + (size_t)(T - 1) * V, V, tolerance("reorder"));
    free(tokens); free(batch_logits); free(batch_taps);
}

// ---- a prefill longer than a forward call ------------------------------------------------------
// target_prefill cuts a prompt longer than the forward's max_tokens into calls of that size: each row's position,
// cache slot, taps, hidden state and the last logits must be those of one call (rows are independent: bit for
// bit), from an empty cache and after earlier tokens (n_past > 0).
static void test_chunked_prefill(const NamedSpec* named, Target* whole, const char* path) {
    Target chunked;
    Error err;
    if (target_load(&chunked, path, &backend_cpu_ref, 64, 3, &err) != 0) { check(0, "%s: load with 3 rows a call: %s", named->label, err.message); return; }
    int n = 9, before = 4, V = whole->config.vocab_size, C = whole->config.dim;
    int* tokens = test_tokens(before + n, V, 23);
    size_t feature_floats = (size_t)n * TAP_LAYERS * C;
    float* features[2] = {mallocCheck(feature_floats * sizeof(float)), mallocCheck(feature_floats * sizeof(float))};
    float* hidden[2] = {mallocCheck((size_t)n * C * sizeof(float)), mallocCheck((size_t)n * C * sizeof(float))};
    float* logits = mallocCheck((size_t)V * sizeof(float));
    char what[160];
    for (int n_past = 0; n_past <= before; n_past += before) {
        Target* targets[2] = {whole, &chunked};
        for (int k = 0; k < 2; k++) {
            reset_cache(targets[k]);
            if (n_past > 0) { target_prefill(targets[k], tokens, n_past, 0, NULL, NULL); }
            target_prefill(targets[k], tokens + n_past, n, n_past, features[k], hidden[k]);
            if (k == 0) { memcpy(logits, whole->host.logits, (size_t)V * sizeof(float)); }
        }
        snprintf(what, sizeof(what), "%s: a prefill of %d tokens after %d in calls of 3 rows, taps", named->label, n, n_past);
        check_tensor(what, features[1], features[0], (int)feature_floats, tolerance("exact"));
        snprintf(what, sizeof(what), "%s: a prefill of %d tokens after %d in calls of 3 rows, hidden states", named->label, n, n_past);
        check_tensor(what, hidden[1], hidden[0], n * C, tolerance("exact"));
        snprintf(what, sizeof(what), "%s: a prefill of %d tokens after %d in calls of 3 rows, the last logits", named->label, n, n_past);
        check_tensor(what, chunked.host.logits, logits, V, tolerance("exact"));
    }
    free(tokens); free(features[0]); free(features[1]); free(hidden[0]); free(hidden[1]); free(logits);
    target_free(&chunked);
}

// ---- position ids ----------------------------------------------------------------------------
static void test_positions(const NamedSpec* named, Target* target) {
    int T = 6, V = target->config.vocab_size;
    int* tokens = test_tokens(T, V, 12);
    int positions[6], shifted[6];
    for (int t = 0; t < T; t++) { positions[t] = t; shifted[t] = t + 37; }
    reset_cache(target);
    target_forward(target, tokens, positions, NULL, T, 0, 1);
    float* reference = mallocCheck((size_t)T * V * sizeof(float));
    memcpy(reference, target->host.logits, (size_t)T * V * sizeof(float));
    reset_cache(target);
    target_forward(target, tokens, shifted, NULL, T, 0, 1);
    char what[128];
    snprintf(what, sizeof(what), "%s: logits with every position shifted by 37", named->label);
    check_tensor(what, target->host.logits, reference, (size_t)T * V, tolerance("layer"));

    // A tree after a 4-token prefix: node 0 is the root, nodes 1 and 2 its children (same position),
    // node 3 a child of node 1. Each node must get the logits of its root-to-node path run alone.
    //      0 (pos 4)
    //     / \          .
    //    1   2 (pos 5)
    //    |
    //    3 (pos 6)
    int prefix = 4;
    int tree_tokens[4] = {tokens[4], tokens[5], (tokens[5] + 1) % V, (tokens[0] + 7) % V};
    int parent[4] = {-1, 0, 0, 1};
    int depth[4] = {0, 1, 1, 2};
    int tree_positions[4];
    uint8_t tree_mask[4 * (4 + 4)] = {0}; // (T, n_past + T): the whole prefix, then ancestors and self
    for (int i = 0; i < 4; i++) {
        tree_positions[i] = prefix + depth[i];
        memset(tree_mask + i * (prefix + 4), 1, prefix);
        for (int j = i; j >= 0; j = parent[j]) { tree_mask[i * (prefix + 4) + prefix + j] = 1; }
    }
    reset_cache(target);
    target_forward(target, tokens, positions, NULL, prefix, 0, 0);
    target_forward(target, tree_tokens, tree_positions, tree_mask, 4, prefix, 1);
    float* tree_logits = mallocCheck((size_t)4 * V * sizeof(float));
    memcpy(tree_logits, target->host.logits, (size_t)4 * V * sizeof(float));
    for (int node = 0; node < 4; node++) {
        int path[3], n_path = 0;
        for (int j = node; j >= 0; j = parent[j]) { path[n_path++] = j; }
        int sequence[8];
        for (int i = 0; i < prefix; i++) { sequence[i] = tokens[i]; }
        for (int i = 0; i < n_path; i++) { sequence[prefix + i] = tree_tokens[path[n_path - 1 - i]]; }
        int sequence_positions[8];
        for (int i = 0; i < prefix + n_path; i++) { sequence_positions[i] = i; }
        reset_cache(target);
        target_forward(target, sequence, sequence_positions, NULL, prefix + n_path, 0, 0);
        snprintf(what, sizeof(what), "%s: tree node %d vs its path run alone", named->label, node);
        check_tensor(what, tree_logits + (size_t)node * V, target->host.logits, V, tolerance("layer"));
    }
    free(tokens); free(reference); free(tree_logits);
}

// ---- taps, hidden, BLAS --------------------------------------------------------------------
static void test_taps_and_blas(const NamedSpec* named, Target* target) {
    TargetConfig* c = &target->config;
    int T = 5, C = c->dim, V = c->vocab_size;
    int* tokens = test_tokens(T, V, 13);
    int positions[5] = {0, 1, 2, 3, 4};
    target_keep_layer_outputs(target);
    float* layer_outputs = target->act.layer_outputs; // host memory on a CPU backend
    // the reference and OpenBLAS tables keep the same fp32 weights in host memory, so a test may switch a
    // target between them (the fast tables read the GGUF types in place: tests/test_backends.c compares them)
    target->backend = &backend_cpu_ref;
    reset_cache(target);
    target_forward(target, tokens, positions, NULL, T, 0, 1);
    char what[128];
    for (int i = 0; i < 3; i++)
        for (int t = 0; t < T; t++) {
            snprintf(what, sizeof(what), "%s: tap %d (layer %d) token %d", named->label, i, c->tap_layers[i], t);
            check_tensor(what, target->host.features + (size_t)t * 3 * C + (size_t)i * C,
                         layer_outputs + ((size_t)c->tap_layers[i] * T + t) * C, C, tolerance("exact"));
        }
    float* hidden = mallocCheck((size_t)T * C * sizeof(float));
    rmsnorm_forward_cpu(hidden, layer_outputs + (size_t)(c->n_layers - 1) * T * C, target->weights.output_norm, T, C, c->norm_eps);
    snprintf(what, sizeof(what), "%s: hidden = final rmsnorm of the last layer", named->label);
    check_tensor(what, target->host.hidden, hidden, (size_t)T * C, tolerance("exact"));
    float* reference_logits = mallocCheck((size_t)T * V * sizeof(float));
    memcpy(reference_logits, target->host.logits, (size_t)T * V * sizeof(float));
#ifdef USE_BLAS
    target->backend = &backend_cpu_blas;
    reset_cache(target);
    target_forward(target, tokens, positions, NULL, T, 0, 1);
    snprintf(what, sizeof(what), "%s: whole forward, OpenBLAS vs reference", named->label);
    check_tensor(what, target->host.logits, reference_logits, (size_t)T * V, tolerance("layer"));
    target->backend = &backend_cpu_ref;
#endif
    free(tokens); free(hidden); free(reference_logits);
}

// ---- generation ------------------------------------------------------------------------------
static void test_generation(const NamedSpec* named, Target* target) {
    int V = target->config.vocab_size, n_prompt = 5, max_new = 12;
    int* prompt = test_tokens(n_prompt, V, 14);
    SamplerSettings greedy = {.temperature = 0.0f, .top_p = 1.0f};
    int first[12], second[12];
    GenerateStats stats;
    target->tokenizer.eos_id = -1; target->tokenizer.n_end_ids = 0; // random weights: don't let an early end-of-sequence shorten the check
    int n1 = generate_plain(target, prompt, n_prompt, max_new, greedy, 1, first, &stats, NULL, NULL);
    int n2 = generate_plain(target, prompt, n_prompt, max_new, greedy, 2, second, &stats, NULL, NULL);
    check(n1 == max_new && n2 == max_new, "%s: greedy generated %d and %d tokens, expected %d", named->label, n1, n2, max_new);
    check_ints("greedy generation is deterministic (seed ignored)", first, second, max_new);
    // every generated token is the argmax of a fresh full forward over prompt + tokens so far
    int sequence[5 + 12];
    memcpy(sequence, prompt, sizeof(int) * n_prompt);
    memcpy(sequence + n_prompt, first, sizeof(int) * max_new);
    int positions[5 + 12];
    for (int i = 0; i < n_prompt + max_new; i++) { positions[i] = i; }
    reset_cache(target);
    target_forward(target, sequence, positions, NULL, n_prompt + max_new - 1, 0, 1);
    int argmax[12];
    for (int k = 0; k < max_new; k++) { argmax[k] = sample_argmax(target->host.logits + (size_t)(n_prompt - 1 + k) * V, V); }
    check_ints("greedy tokens vs argmax of one full forward", first, argmax, max_new);
    // sampling repeats exactly for a seed
    SamplerSettings sampled = {.temperature = 0.8f, .top_p = 0.95f};
    generate_plain(target, prompt, n_prompt, max_new, sampled, 5, first, &stats, NULL, NULL);
    generate_plain(target, prompt, n_prompt, max_new, sampled, 5, second, &stats, NULL, NULL);
    check_ints("sampled generation repeats for one seed", first, second, max_new);
    free(prompt);
}

// ---- malformed model files -------------------------------------------------------------------
// Rewrites a valid model, leaving out one key or one tensor, or replacing one string key's value, or
// giving one tensor the wrong shape; then checks that loading fails with a message naming it.
typedef struct { const char* drop_key; const char* drop_tensor; const char* string_key; const char* string_value;
                 const char* transpose_tensor; } Mutation;

static void test_malformed_model(const char* good_path) {
    const struct { Mutation mutation; const char* expected_in_message; } cases[] = {
        {{"llama.block_count", NULL, NULL, NULL, NULL}, "llama.block_count"},
        {{"llama.attention.layer_norm_rms_epsilon", NULL, NULL, NULL, NULL}, "layer_norm_rms_epsilon"},
        {{NULL, "blk.1.ffn_up.weight", NULL, NULL, NULL}, "blk.1.ffn_up.weight"},
        {{NULL, "output_norm.weight", NULL, NULL, NULL}, "output_norm.weight"},
        {{NULL, NULL, "general.architecture", "gpt2", NULL}, "architecture"},
        {{NULL, NULL, "tokenizer.ggml.model", "sentencepiece-unknown", NULL}, "tokenizer.ggml.model"},
        {{"tokenizer.ggml.pre", NULL, NULL, NULL, NULL}, "tokenizer.ggml.pre"},
        {{NULL, NULL, "tokenizer.ggml.pre", "default", NULL}, "tokenizer.ggml.pre"},
        {{NULL, NULL, NULL, NULL, "blk.0.attn_k.weight"}, "blk.0.attn_k.weight"},
    };
    GGUFFile good;
    Error err;
    check(gguf_open(&good, good_path, &err) == 0, "reopen %s: %s", good_path, err.message);
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const Mutation* m = &cases[k].mutation;
        GGUFWriter* writer = gguf_writer_new();
        const char* skip_keys[3] = {m->drop_key ? m->drop_key : m->string_key, m->string_key, NULL};
        check(gguf_writer_copy_values(writer, &good, skip_keys, &err) == 0, "copy metadata: %s", err.message);
        if (m->string_key) { gguf_writer_add_string(writer, m->string_key, m->string_value); }
        for (uint64_t i = 0; i < good.n_tensors; i++) {
            const GGUFTensor* t = &good.tensors[i];
            if (m->drop_tensor && strcmp(t->name, m->drop_tensor) == 0) { continue; }
            float* data = mallocCheck((size_t)t->n_elements * sizeof(float));
            gguf_tensor_to_f32(t, data);
            int64_t shape[GGUF_MAX_DIMS];
            memcpy(shape, t->shape, sizeof(shape));
            if (m->transpose_tensor && strcmp(t->name, m->transpose_tensor) == 0) { shape[0] = t->shape[1]; shape[1] = t->shape[0]; }
            gguf_writer_add_tensor(writer, t->name, TYPE_F32, t->n_dims, shape, data);
            free(data);
        }
        const char* path = temp_path("malformed");
        check(gguf_writer_save(writer, path, &err) == 0, "write malformed case %zu: %s", k, err.message);
        gguf_writer_free(writer);
        Target target;
        err.message[0] = '\0';
        int status = target_load(&target, path, backend_cpu(), 32, 8, &err);
        check(status != 0, "malformed case %zu (%s) loaded without error", k, cases[k].expected_in_message);
        check(strstr(err.message, cases[k].expected_in_message) != NULL && strstr(err.message, path) != NULL,
              "malformed case %zu: message '%s' should name '%s' and the file", k, err.message, cases[k].expected_in_message);
        if (status == 0) { target_free(&target); }
    }
    gguf_close(&good);
    Target target;
    check(target_load(&target, temp_path("does-not-exist"), backend_cpu(), 32, 8, &err) != 0 && strstr(err.message, "does-not-exist"),
          "a missing file must fail naming the file: '%s'", err.message);
}

// A table whose attention takes at most 400 slots at any head size (as the CUDA table's shared memory
// bounds it): a context whose slots, with a draft tree's beyond them, exceed that is refused at load,
// naming the most that fits; one that fits loads.
static int attention_limit = 400;
static int attention_max_limited(int HS) { (void)HS; return attention_limit; }
static void test_attention_limit(const char* path) {
    Backend limited = backend_cpu_ref;
    limited.attention_max_slots = attention_max_limited;
    int spare = MAX_SPEC_K * TREE_MAX_DEPTH;
    Target target;
    Error err = {{0}};
    int status = target_load(&target, path, &limited, 400 - spare + 1, 8, &err);
    char expected[64];
    snprintf(expected, sizeof(expected), "expected --context %d or less", 400 - spare);
    check(status != 0 && strstr(err.message, expected) != NULL && strstr(err.message, path) != NULL,
          "a context past the table's attention limit: status %d, '%s' (expected an error with '%s')", status, err.message, expected);
    if (status == 0) { target_free(&target); }
    status = target_load(&target, path, &limited, 400 - spare, 8, &err);
    check(status == 0, "a context at the table's attention limit loads: %s", status ? err.message : "");
    if (status != 0) { return; }
    // a draft is checked at its own head size (an imported one's may differ from the target's): here the
    // table's limit drops below the context before the draft loads
    Draft draft;
    draft_init_random(&draft, &target, 64, NULL, 3);
    const char* draft_path = temp_path("limited_draft.gguf");
    check(draft_save(&draft, draft_path, &err) == 0, "save the draft: %s", err.message);
    draft_free(&draft);
    attention_limit = 300;
    status = draft_load(&draft, draft_path, &target, &err);
    check(status != 0 && strstr(err.message, "at most 300 slots") != NULL, "a draft past the table's attention limit: "
          "status %d, '%s'", status, err.message);
    if (status == 0) { draft_free(&draft); }
    attention_limit = 400;
    status = draft_load(&draft, draft_path, &target, &err);
    check(status == 0, "a draft within the table's attention limit loads: %s", status ? err.message : "");
    if (status == 0) { draft_free(&draft); }
    target_free(&target);
}

int main(void) {
    snprintf(temp_dir, sizeof(temp_dir), "/tmp/aurora_test_model_%d", (int)getpid());
    Error mkdir_err;
    if (make_directories(temp_dir, &mkdir_err) != 0) { fprintf(stderr, "%s\n", mkdir_err.message); return 1; }
    for (int i = 0; i < NUM_SPECS; i++) {
        const NamedSpec* named = &SPECS[i];
        const char* path = temp_path(named->label);
        Error err;
        check(tiny_model_write(path, &named->spec, &err) == 0, "%s: write: %s", named->label, err.message);
        Target target;
        if (target_load(&target, path, &backend_cpu_ref, 64, 16, &err) != 0) { // the model's semantics, on the oracle
            check(0, "%s: load: %s", named->label, err.message);
            continue;
        }
        printf("model %s\n", named->label);
        test_loading(named, &target);
        test_batch_equals_sequential(named, &target);
        test_chunked_prefill(named, &target, path);
        test_positions(named, &target);
        test_taps_and_blas(named, &target);
        test_generation(named, &target);
        target_free(&target);
    }
    test_malformed_model(temp_path(SPECS[0].label));
    test_attention_limit(temp_path(SPECS[0].label));
    if (remove_tree(temp_dir) != 0) { fprintf(stderr, "warning: could not remove %s\n", temp_dir); }
    return test_summary();
}
